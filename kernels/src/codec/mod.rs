//! Gradient compression codecs over `&[f32]`, usable without LibTorch.
