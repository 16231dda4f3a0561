//! Recovery point manifests: one object per point, written last, create-only.
//! A point exists exactly when its manifest does.
//!
//! Body (inside an envelope, LE):
//!
//! ```text
//! sequence u64 | time (µs since Unix epoch, UTC) i64 | kind u8 | reserved [7]
//! disk bytes u64 | chunk bytes u32 | page entries u32
//! bytes read u64 | bytes new u64 | disk name (u16 len + UTF-8) | label (u16 len + UTF-8)
//! page count u32 | page id (32) * count                      (zero id = all-zero page)
//! ```

use crate::bytes::{put_string, Reader};
use crate::envelope::{Envelope, ObjectKind};
use crate::{
    validate_disk_name, ChunkId, FormatError, Keys, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN, DISK_BYTES_MAX, LABEL_BYTES_MAX,
    PAGE_ENTRIES_MAX,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    CrashConsistent,
    AppConsistent,
}

impl PointKind {
    pub fn name(self) -> &'static str {
        match self {
            PointKind::CrashConsistent => "crash-consistent",
            PointKind::AppConsistent => "app-consistent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointManifest {
    pub sequence: u64,
    pub time_micros: i64,
    pub kind: PointKind,
    pub disk: String,
    pub label: String,
    pub disk_bytes: u64,
    pub chunk_bytes: u32,
    pub page_entries: u32,
    /// Bytes of the image the sync read.
    pub bytes_read: u64,
    /// Bytes of new frames the sync stored (compressed, encrypted).
    pub bytes_new: u64,
    pub pages: Vec<ChunkId>,
}

impl PointManifest {
    pub fn chunk_count(disk_bytes: u64, chunk_bytes: u32) -> u64 {
        disk_bytes.div_ceil(u64::from(chunk_bytes))
    }

    pub fn page_count(disk_bytes: u64, chunk_bytes: u32, page_entries: u32) -> u64 {
        Self::chunk_count(disk_bytes, chunk_bytes).div_ceil(u64::from(page_entries))
    }

    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 32 * self.pages.len());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.time_micros.to_le_bytes());
        out.push(match self.kind {
            PointKind::CrashConsistent => 0,
            PointKind::AppConsistent => 1,
        });
        out.extend_from_slice(&[0; 7]);
        out.extend_from_slice(&self.disk_bytes.to_le_bytes());
        out.extend_from_slice(&self.chunk_bytes.to_le_bytes());
        out.extend_from_slice(&self.page_entries.to_le_bytes());
        out.extend_from_slice(&self.bytes_read.to_le_bytes());
        out.extend_from_slice(&self.bytes_new.to_le_bytes());
        put_string(&mut out, &self.disk);
        put_string(&mut out, &self.label);
        out.extend_from_slice(&(self.pages.len() as u32).to_le_bytes());
        for page in &self.pages {
            out.extend_from_slice(&page.0);
        }
        out
    }

    pub fn decode_body(body: &[u8]) -> Result<Self, FormatError> {
        let mut reader = Reader::new(body, "recovery point");
        let sequence = reader.u64()?;
        let time_micros = reader.i64()?;
        let kind = match reader.u8()? {
            0 => PointKind::CrashConsistent,
            1 => PointKind::AppConsistent,
            other => return Err(crate::error::malformed(format!("unknown point kind {other}"))),
        };
        let _reserved = reader.array::<7>()?;
        let disk_bytes = reader.u64()?;
        let chunk_bytes = reader.u32()?;
        let page_entries = reader.u32()?;
        if disk_bytes > DISK_BYTES_MAX
            || !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&chunk_bytes)
            || !chunk_bytes.is_power_of_two()
            || page_entries == 0
            || page_entries > PAGE_ENTRIES_MAX
        {
            return Err(crate::error::malformed("recovery point geometry out of range"));
        }
        let bytes_read = reader.u64()?;
        let bytes_new = reader.u64()?;
        let disk = reader.string(crate::DISK_NAME_BYTES_MAX)?;
        validate_disk_name(&disk).map_err(crate::error::malformed)?;
        let label = reader.string(LABEL_BYTES_MAX)?;
        let page_count = u64::from(reader.u32()?);
        if page_count != Self::page_count(disk_bytes, chunk_bytes, page_entries) {
            return Err(crate::error::malformed("recovery point page count does not match its disk size"));
        }
        let mut pages = Vec::with_capacity(page_count as usize);
        for _ in 0..page_count {
            pages.push(ChunkId(reader.array()?));
        }
        reader.finish()?;
        Ok(PointManifest {
            sequence,
            time_micros,
            kind,
            disk,
            label,
            disk_bytes,
            chunk_bytes,
            page_entries,
            bytes_read,
            bytes_new,
            pages,
        })
    }

    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        Envelope::seal(ObjectKind::Point, &self.encode_body(), keys, false)
    }

    pub fn open(bytes: &[u8], keys: &Keys) -> Result<Self, FormatError> {
        Self::decode_body(&Envelope::open(ObjectKind::Point, bytes, keys)?)
    }

    /// How many chunk entries page `page` holds (the last page may be short).
    pub fn entries_in_page(&self, page: usize) -> u32 {
        let chunks = Self::chunk_count(self.disk_bytes, self.chunk_bytes);
        let start = page as u64 * u64::from(self.page_entries);
        (chunks - start).min(u64::from(self.page_entries)) as u32
    }

    /// Raw length of chunk `chunk` (the last chunk of the disk may be short).
    pub fn chunk_len(&self, chunk: u64) -> u32 {
        let start = chunk * u64::from(self.chunk_bytes);
        (self.disk_bytes - start).min(u64::from(self.chunk_bytes)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips() {
        let disk_bytes = 3 * 65536 * 4 + 100;
        let manifest = PointManifest {
            sequence: 3,
            time_micros: 1_700_000_000_000_000,
            kind: PointKind::AppConsistent,
            disk: "web-01.root".into(),
            label: "before upgrade".into(),
            disk_bytes,
            chunk_bytes: 65536,
            page_entries: 4,
            bytes_read: 1,
            bytes_new: 2,
            pages: vec![ChunkId([1; 32]); PointManifest::page_count(disk_bytes, 65536, 4) as usize],
        };
        assert_eq!(manifest.pages.len(), 4);
        assert_eq!(manifest.entries_in_page(3), 1);
        assert_eq!(manifest.chunk_len(12), 100);
        assert_eq!(PointManifest::open(&manifest.seal(&Keys::plain()), &Keys::plain()).unwrap(), manifest);
    }
}
