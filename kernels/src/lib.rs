//! gradmesh-kernels: everything numeric that a gradmesh peer runs locally — LibTorch models and
//! optimizers, flat gradient buffers, compression codecs and checkpoints. It never sees the
//! network. Codecs work on `&[f32]` and expose no LibTorch types, so they build without the
//! `torch` feature (the simulator uses them to count bytes).

pub mod codec;
