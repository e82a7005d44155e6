//! Layers wrap a [`RawStore`](crate::RawStore) and are one themselves, so cross-cutting
//! concerns are written once for every backend (as in OpenDAL and tower):
//! [`Encrypted`] keeps only ciphertext in the backend, [`Timeout`] bounds every call,
//! [`Traced`] logs every call without its value.

mod encrypted;
mod timeout;
mod traced;

pub use encrypted::Encrypted;
pub use timeout::Timeout;
pub use traced::Traced;
