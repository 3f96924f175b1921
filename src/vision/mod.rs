//! Llama 3.2 Vision's image side: preprocessing (image file → normalised tiles) and the vision
//! encoder (tiles → cross-attention states).

pub mod encoder;
pub mod preprocess;
