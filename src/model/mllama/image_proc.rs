//! Image preprocessing as the reference `MllamaImageProcessor` does it.
