//! The mllama vision encoder and projector.
