//! The intent log of a splitter (`<image>.standby-dirty`, beside the disk
//! image): one bit per region of the image, set and made durable before the
//! image first changes there, cleared once every change to it is in the
//! vault. After a crash the set bits are the regions to re-read. It is a
//! local file, rewritten in place a word at a time:
//!
//! ```text
//! "SBYDIRTY" | version u16 (1) | reserved (6) | region bytes u64 | image bytes u64
//! | bitmap: ceil(regions / 64) u64 words, LE; bit i of word w is region 64w + i
//! ```
//!
//! A log whose length, magic, version, region size or image size is not the
//! expected one says nothing (the caller re-reads everything).

const MAGIC: &[u8; 8] = b"SBYDIRTY";
const VERSION: u16 = 1;
pub const INTENT_HEADER_BYTES: u64 = 32;

/// Regions of `region_bytes` in an image of `image_bytes`.
pub fn intent_regions(region_bytes: u64, image_bytes: u64) -> usize {
    image_bytes.div_ceil(region_bytes.max(1)) as usize
}

/// The length of a whole intent log.
pub fn intent_log_bytes(region_bytes: u64, image_bytes: u64) -> u64 {
    INTENT_HEADER_BYTES + 8 * intent_regions(region_bytes, image_bytes).div_ceil(64) as u64
}

pub fn encode_intent_header(region_bytes: u64, image_bytes: u64) -> [u8; INTENT_HEADER_BYTES as usize] {
    let mut header = [0u8; INTENT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..10].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&region_bytes.to_le_bytes());
    header[24..32].copy_from_slice(&image_bytes.to_le_bytes());
    header
}

/// The regions a log's bytes mark dirty, if they are a whole log for this
/// region size and image size; `None` otherwise.
pub fn decode_intent_log(bytes: &[u8], region_bytes: u64, image_bytes: u64) -> Option<Vec<usize>> {
    let count = intent_regions(region_bytes, image_bytes);
    let words = &bytes.get(INTENT_HEADER_BYTES as usize..)?;
    let valid = region_bytes > 0
        && bytes.len() as u64 == intent_log_bytes(region_bytes, image_bytes)
        && bytes[..INTENT_HEADER_BYTES as usize] == encode_intent_header(region_bytes, image_bytes)[..];
    if !valid {
        return None;
    }
    let mut dirty = Vec::new();
    for (index, word) in words.chunks_exact(8).enumerate() {
        let mut bits = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        while bits != 0 {
            let region = index * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if region < count {
                dirty.push(region);
            }
        }
    }
    Some(dirty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_decodes_to_its_set_bits_and_nothing_else_is_believed() {
        let (region, image) = (1 << 20, 70 * (1 << 20) + 1);
        let mut log = encode_intent_header(region, image).to_vec();
        let mut words = [0u64; 2];
        for bit in [0usize, 63, 64, 70] {
            words[bit / 64] |= 1 << (bit % 64);
        }
        // A bit past the last region (71 regions: 0..=70) is ignored.
        words[1] |= 1 << (71 - 64);
        for word in words {
            log.extend_from_slice(&word.to_le_bytes());
        }
        assert_eq!(decode_intent_log(&log, region, image), Some(vec![0, 63, 64, 70]));
        assert_eq!(decode_intent_log(&log, region, image + region), None, "another image size");
        assert_eq!(decode_intent_log(&log, region * 2, image), None, "another region size");
        assert_eq!(decode_intent_log(&log[..log.len() - 1], region, image), None, "torn");
        let mut bad = log.clone();
        bad[9] = 2;
        assert_eq!(decode_intent_log(&bad, region, image), None, "another version");
        bad = log.clone();
        bad[12] = 1;
        assert_eq!(decode_intent_log(&bad, region, image), None, "reserved bytes set");
        assert_eq!(decode_intent_log(&[], region, image), None);
    }
}
