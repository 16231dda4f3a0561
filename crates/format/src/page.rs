//! Map pages: the chunk ids of a run of consecutive disk blocks. A point
//! lists its pages; pages are stored as chunks themselves, so two points that
//! agree on a 256 MiB region share its page, and an incremental sync writes
//! only the pages it changed.
//!
//! ```text
//! page = entry count (u32 LE) || chunk id (32) * count      (zero id = block of zeros)
//! ```

use crate::bytes::Reader;
use crate::{ChunkId, FormatError, PAGE_ENTRIES_MAX};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapPage {
    pub entries: Vec<ChunkId>,
}

impl MapPage {
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.entries.len() <= PAGE_ENTRIES_MAX as usize, "map page too large to encode");
        let mut out = Vec::with_capacity(4 + 32 * self.entries.len());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.0);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut reader = Reader::new(bytes, "map page");
        let count = reader.u32()?;
        if count > PAGE_ENTRIES_MAX {
            return Err(FormatError::TooLarge { context: "map page" });
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            entries.push(ChunkId(reader.array()?));
        }
        reader.finish()?;
        Ok(MapPage { entries })
    }

    /// True when every block of the page is zeros: such a page is never stored
    /// and is referenced by the zero id.
    pub fn is_all_zero(&self) -> bool {
        self.entries.iter().all(ChunkId::is_zero)
    }
}
