//! The NBD wire protocol (the NBD project's `proto.md`): the fixed newstyle
//! handshake, option haggling, and the transmission phase's requests and
//! replies. Pure encoding and decoding, no I/O: every decoder takes
//! untrusted bytes and returns an error instead of panicking.

use std::fmt;

/// "NBDMAGIC", sent first by the server.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": the newstyle magic, and the prefix of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
const REP_ERROR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_ERROR | 1;
pub const REP_ERR_POLICY: u32 = REP_ERROR | 2;
pub const REP_ERR_INVALID: u32 = REP_ERROR | 3;
pub const REP_ERR_UNKNOWN: u32 = REP_ERROR | 6;

/// Information types of `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
const CMD_FLAGS_KNOWN: u16 = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | 1 << 3 | CMD_FLAG_FAST_ZERO;

/// Structured reply types and flags.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

/// Errors carried in replies (Linux errno values, as the protocol says).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

pub const REQUEST_BYTES: usize = 28;
/// Largest option payload accepted; anything larger closes the connection.
pub const OPTION_BYTES_MAX: u32 = 64 << 10;
/// Longest export name (the protocol allows 4096).
pub const NAME_BYTES_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    Disconnect,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
    Other(u16),
}

impl Command {
    fn from_u16(value: u16) -> Self {
        match value {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disconnect,
            3 => Command::Flush,
            4 => Command::Trim,
            5 => Command::Cache,
            6 => Command::WriteZeroes,
            7 => Command::BlockStatus,
            other => Command::Other(other),
        }
    }
}

/// One transmission-phase request header (the write payload follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: Command,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A magic number is wrong: the peer is not speaking NBD (or is out of sync).
    BadMagic { context: &'static str, found: u64 },
    /// Something the protocol forbids, named.
    Invalid(String),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadMagic { context, found } => write!(f, "bad {context} magic {found:#x}"),
            ProtocolError::Invalid(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl Request {
    pub fn decode(bytes: &[u8; REQUEST_BYTES]) -> Result<Self, ProtocolError> {
        let magic = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::BadMagic { context: "request", found: u64::from(magic) });
        }
        Ok(Request {
            flags: u16::from_be_bytes(bytes[4..6].try_into().expect("2 bytes")),
            command: Command::from_u16(u16::from_be_bytes(bytes[6..8].try_into().expect("2 bytes"))),
            cookie: u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
            offset: u64::from_be_bytes(bytes[16..24].try_into().expect("8 bytes")),
            length: u32::from_be_bytes(bytes[24..28].try_into().expect("4 bytes")),
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_BYTES] {
        let command = match self.command {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disconnect => 2,
            Command::Flush => 3,
            Command::Trim => 4,
            Command::Cache => 5,
            Command::WriteZeroes => 6,
            Command::BlockStatus => 7,
            Command::Other(other) => other,
        };
        let mut out = [0u8; REQUEST_BYTES];
        out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&u16::to_be_bytes(command));
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    pub fn has_unknown_flags(&self) -> bool {
        self.flags & !CMD_FLAGS_KNOWN != 0
    }

    pub fn fua(&self) -> bool {
        self.flags & CMD_FLAG_FUA != 0
    }

    /// Whether `offset..offset + length` lies inside an export of `size` bytes.
    pub fn in_range(&self, size: u64) -> bool {
        self.offset.checked_add(u64::from(self.length)).is_some_and(|end| end <= size)
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`: an export name and the
/// information types the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub requests: Vec<u16>,
}

impl InfoRequest {
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let invalid = |what: &str| ProtocolError::Invalid(format!("NBD_OPT_GO/INFO: {what}"));
        let name_len = data.get(0..4).ok_or_else(|| invalid("too short for a name length"))?;
        let name_len = u32::from_be_bytes(name_len.try_into().expect("4 bytes")) as usize;
        if name_len > NAME_BYTES_MAX {
            return Err(invalid("export name too long"));
        }
        let name = data.get(4..4 + name_len).ok_or_else(|| invalid("name runs past the option"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| invalid("export name is not UTF-8"))?;
        let rest = &data[4 + name_len..];
        let count = rest.get(0..2).ok_or_else(|| invalid("no information request count"))?;
        let count = u16::from_be_bytes(count.try_into().expect("2 bytes")) as usize;
        let list = &rest[2..];
        if list.len() != count * 2 {
            return Err(invalid("information request count does not match the option length"));
        }
        let requests = list.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
        Ok(InfoRequest { name, requests })
    }
}

/// An option reply: magic, option, reply type, length, data.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out
}

/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum request sizes.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&minimum.to_be_bytes());
    out.extend_from_slice(&preferred.to_be_bytes());
    out.extend_from_slice(&maximum.to_be_bytes());
    out
}

/// A simple reply header (READ data follows it).
pub fn simple_reply(cookie: u64, error: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out
}

/// A structured reply chunk header; `length` bytes of payload follow it.
pub fn structured_header(cookie: u64, flags: u16, kind: u16, length: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&kind.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..20].copy_from_slice(&length.to_be_bytes());
    out
}

/// A structured `NBD_REPLY_TYPE_ERROR` chunk (final), with a message.
pub fn structured_error(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    let message = &message.as_bytes()[..message.len().min(4096)];
    let mut out = Vec::with_capacity(26 + message.len());
    out.extend_from_slice(&structured_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 6 + message.len() as u32));
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_magic_is_named() {
        let request = Request { flags: CMD_FLAG_FUA, command: Command::Write, cookie: 7, offset: 4096, length: 512 };
        assert_eq!(Request::decode(&request.encode()).unwrap(), request);
        let mut bytes = request.encode();
        bytes[0] ^= 1;
        assert!(matches!(Request::decode(&bytes), Err(ProtocolError::BadMagic { context: "request", .. })));
        assert!(request.in_range(4608) && !request.in_range(4607));
        let huge = Request { offset: u64::MAX, ..request };
        assert!(!huge.in_range(u64::MAX));
    }

    #[test]
    fn info_requests_decode_and_refuse_bad_lengths() {
        let mut data = Vec::new();
        data.extend_from_slice(&3u32.to_be_bytes());
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&2u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        data.extend_from_slice(&INFO_NAME.to_be_bytes());
        let info = InfoRequest::decode(&data).unwrap();
        assert_eq!(info, InfoRequest { name: "abc".into(), requests: vec![INFO_BLOCK_SIZE, INFO_NAME] });
        for cut in 0..data.len() {
            assert!(InfoRequest::decode(&data[..cut]).is_err(), "accepted a cut at {cut}");
        }
        let mut long = data.clone();
        long[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(InfoRequest::decode(&long).is_err());
    }
}
