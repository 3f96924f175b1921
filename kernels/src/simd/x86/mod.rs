//! What the x86 levels share: helpers and block layouts (`kquant`), and kernels written once —
//! as macros over a level's target features (`legacy`, `legacy_tiles`) or as loops generic over
//! a level's products (`packed`) — that each level's folder compiles for itself.

pub(crate) mod kquant;
pub(crate) mod legacy;
pub(crate) mod legacy_tiles;
pub(crate) mod packed;
