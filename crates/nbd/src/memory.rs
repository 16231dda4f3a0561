//! An export held in memory: for tests and fuzzing, where a file would only
//! add noise.

use std::io;
use std::sync::RwLock;

use crate::server::Export;

pub struct MemoryExport {
    data: RwLock<Vec<u8>>,
}

impl MemoryExport {
    pub fn new(data: Vec<u8>) -> Self {
        MemoryExport { data: RwLock::new(data) }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn fill(&self, offset: u64, len: u64, value: u8) {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        data[offset as usize..(offset + len) as usize].fill(value);
    }
}

impl Export for MemoryExport {
    fn size(&self) -> u64 {
        self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    fn read(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        buffer.copy_from_slice(&data[offset as usize..offset as usize + buffer.len()]);
        Ok(())
    }

    fn write(&self, offset: u64, bytes: &[u8], _fua: bool) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        data[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_trim: bool, _fua: bool) -> io::Result<()> {
        self.fill(offset, len, 0);
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, _fua: bool) -> io::Result<()> {
        self.fill(offset, len, 0);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}
