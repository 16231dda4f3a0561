//! Little-endian cursor helpers shared by the decoders. Every read is bounds
//! checked and reports truncation instead of panicking.

use crate::FormatError;

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], context: &'static str) -> Self {
        Reader { bytes, position: 0, context }
    }

    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8], FormatError> {
        let end = self.position.checked_add(count).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(FormatError::Truncated { context: self.context })?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        Ok(self.take(N)?.try_into().expect("take returns exactly N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A u16-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn string(&mut self, max: usize) -> Result<String, FormatError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(FormatError::TooLarge { context: self.context });
        }
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| crate::error::malformed("string is not UTF-8"))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub(crate) fn finish(self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(crate::error::malformed(format!("{} trailing bytes in {}", self.remaining(), self.context)));
        }
        Ok(())
    }
}

pub(crate) fn put_string(out: &mut Vec<u8>, value: &str) {
    let len = u16::try_from(value.len()).expect("strings are length-checked before encoding");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value.as_bytes());
}
