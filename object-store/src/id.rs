//! Object ids.

use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};

/// The id of an object: 16 bytes, unique in a cluster. The runtime derives it from the owner
/// and a counter; the store only needs it to be unique.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Archive, Serialize, Deserialize,
)]
#[rkyv(derive(PartialEq, Eq, Hash, Debug))]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    /// An id from a 128-bit number (handy in tests and for counters).
    pub const fn from_u128(n: u128) -> Self {
        ObjectId(n.to_le_bytes())
    }

    /// The id as a 128-bit number.
    pub const fn as_u128(&self) -> u128 {
        u128::from_le_bytes(self.0)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().rev() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}
