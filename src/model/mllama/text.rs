//! The mllama text decoder with cross-attention.
