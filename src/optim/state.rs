//! Named optimizer state arrays, so checkpoints can store them without knowing each optimizer.

/// A borrowed state array.
#[derive(Clone, Copy, Debug)]
pub enum StateData<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
    F64(&'a [f64]),
    U64(&'a [u64]),
}

impl StateData<'_> {
    pub fn len(&self) -> usize {
        match self {
            StateData::F32(x) => x.len(),
            StateData::U32(x) => x.len(),
            StateData::F64(x) => x.len(),
            StateData::U64(x) => x.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes(&self) -> usize {
        match self {
            StateData::F32(x) => x.len() * 4,
            StateData::U32(x) => x.len() * 4,
            StateData::F64(x) => x.len() * 8,
            StateData::U64(x) => x.len() * 8,
        }
    }
    /// Little-endian bytes, as stored on disk.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            StateData::F32(x) => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StateData::U32(x) => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StateData::F64(x) => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StateData::U64(x) => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("optimizer state '{0}' is missing")]
    Missing(String),
    #[error("optimizer state '{name}' has {found} values, expected {expected}")]
    WrongLength { name: String, expected: usize, found: usize },
    #[error("optimizer state '{name}' has type {found}, expected {expected}")]
    WrongType { name: String, expected: &'static str, found: String },
}

/// Where saved state is read back from: each call fills `into` exactly or fails.
pub trait StateSource {
    fn read_f32(&self, name: &str, into: &mut [f32]) -> Result<(), StateError>;
    fn read_u32(&self, name: &str, into: &mut [u32]) -> Result<(), StateError>;
    fn read_f64(&self, name: &str, into: &mut [f64]) -> Result<(), StateError>;
    fn read_u64(&self, name: &str, into: &mut [u64]) -> Result<(), StateError>;
}
