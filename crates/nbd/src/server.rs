//! An NBD server: the fixed newstyle handshake, then the transmission phase
//! with pipelined requests answered out of order by a few workers per
//! connection. It serves one [`Export`] on a unix socket (or any stream).
//!
//! A client that sends garbage gets the protocol's error reply, or its
//! connection closed when the stream can no longer be trusted (bad magic,
//! a write payload too large to skip); other connections carry on.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::*;

/// A connected byte stream a client speaks NBD on: a unix socket or TCP.
pub trait Stream: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn shutdown(&self) -> io::Result<()>;
}

impl Stream for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
    fn shutdown(&self) -> io::Result<()> {
        UnixStream::shutdown(self, std::net::Shutdown::Both)
    }
}

impl Stream for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn shutdown(&self) -> io::Result<()> {
        TcpStream::shutdown(self, std::net::Shutdown::Both)
    }
}

/// What a server serves. Offsets and lengths are checked against
/// [`Export::size`] before any method is called.
pub trait Export: Send + Sync + 'static {
    fn size(&self) -> u64;
    fn read_only(&self) -> bool {
        false
    }
    fn read(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()>;
    /// With `fua`, the data is durable before this returns.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()>;
    /// A write whose buffer the export may keep (the server is done with
    /// it): exports that queue the data avoid a copy.
    fn write_owned(&self, offset: u64, data: Vec<u8>, fua: bool) -> io::Result<()> {
        self.write(offset, &data, fua)
    }
    /// Makes the range read as zeros; `may_trim` allows freeing it.
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool, fua: bool) -> io::Result<()>;
    /// The client no longer needs the range; reads of it may return anything.
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()>;
    /// Every write completed before this call is durable when it returns.
    fn flush(&self) -> io::Result<()>;
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The export's name (clients asking for "" get it too).
    pub name: String,
    pub description: String,
    /// Largest READ or WRITE accepted (advertised as the maximum block size).
    pub request_bytes_max: u32,
    /// Requests of one connection served at once.
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { name: String::new(), description: String::new(), request_bytes_max: 32 << 20, workers: 4 }
    }
}

/// Counters shared by every connection of a server.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    /// Connections closed because the client broke the protocol.
    pub protocol_errors: AtomicU64,
}

pub struct Server {
    export: Arc<dyn Export>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn new(export: Arc<dyn Export>, config: ServerConfig) -> Self {
        Server { export, config, stats: Arc::default(), stop: Arc::default() }
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// A handle that makes [`Server::serve_unix`] return (within ~100 ms).
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Binds `path` (replacing a stale socket file) and serves until stopped.
    /// Each connection runs on its own threads.
    pub fn serve_unix(&self, path: &Path) -> io::Result<()> {
        let listener = bind_unix(path)?;
        self.serve_listener(listener)
    }

    pub fn serve_listener(&self, listener: UnixListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        self.accept_loop(|| listener.accept().map(|(stream, _)| stream))
    }

    /// Serves NBD over TCP (for the recovery site's exports reached over the
    /// network); Nagle is off so small replies are not delayed.
    pub fn serve_tcp(&self, listener: TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        self.accept_loop(|| {
            let (stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }

    fn accept_loop<S: Stream + NonBlocking>(&self, mut accept: impl FnMut() -> io::Result<S>) -> io::Result<()> {
        while !self.stop.load(Ordering::Relaxed) {
            match accept() {
                Ok(stream) => {
                    stream.set_blocking()?;
                    let export = self.export.clone();
                    let config = self.config.clone();
                    let stats = self.stats.clone();
                    std::thread::Builder::new().name("nbd-connection".into()).spawn(move || {
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        let outcome = serve_connection(stream, export, &config, &stats);
                        match outcome {
                            Ok(()) => {}
                            Err(ConnectionEnd::Protocol(problem)) => {
                                stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!("closed an NBD connection: {problem}");
                            }
                            Err(ConnectionEnd::Io(e)) => tracing::debug!("an NBD connection ended: {e}"),
                        }
                    })?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Accepted streams inherit the listener's non-blocking mode; connections
/// are served blocking.
trait NonBlocking {
    fn set_blocking(&self) -> io::Result<()>;
}

impl NonBlocking for UnixStream {
    fn set_blocking(&self) -> io::Result<()> {
        self.set_nonblocking(false)
    }
}

impl NonBlocking for TcpStream {
    fn set_blocking(&self) -> io::Result<()> {
        self.set_nonblocking(false)
    }
}

/// Binds a unix socket at `path`, removing a socket file left by a previous
/// run (but nothing that is not a socket).
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if metadata.file_type().is_socket() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another server", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    UnixListener::bind(path)
}

/// Why a connection ended early.
#[derive(Debug)]
enum ConnectionEnd {
    /// The client broke the protocol; the stream is closed.
    Protocol(String),
    Io(io::Error),
}

impl From<io::Error> for ConnectionEnd {
    fn from(e: io::Error) -> Self {
        ConnectionEnd::Io(e)
    }
}

fn protocol(what: impl Into<String>) -> ConnectionEnd {
    ConnectionEnd::Protocol(what.into())
}

/// Serves one already-connected client to the end of its connection; the
/// result says whether the client broke the protocol. (Used by the fuzz
/// target, which talks to the server over a socket pair.)
pub fn serve_stream(stream: UnixStream, export: Arc<dyn Export>, config: &ServerConfig) -> Result<(), String> {
    match serve_connection(stream, export, config, &ServerStats::default()) {
        Ok(()) => Ok(()),
        Err(ConnectionEnd::Protocol(problem)) => Err(problem),
        Err(ConnectionEnd::Io(e)) => Err(e.to_string()),
    }
}

fn serve_connection<S: Stream>(
    mut stream: S,
    export: Arc<dyn Export>,
    config: &ServerConfig,
    stats: &ServerStats,
) -> Result<(), ConnectionEnd> {
    let Some(session) = handshake(&mut stream, export.as_ref(), config)? else { return Ok(()) };
    transmission(stream, export, config, session, stats)
}

#[derive(Debug, Clone, Copy)]
struct Session {
    structured: bool,
}

fn transmission_flags(export: &dyn Export) -> u16 {
    let mut flags = FLAG_HAS_FLAGS
        | FLAG_SEND_FLUSH
        | FLAG_SEND_FUA
        | FLAG_SEND_TRIM
        | FLAG_SEND_WRITE_ZEROES
        | FLAG_SEND_DF
        | FLAG_CAN_MULTI_CONN;
    if export.read_only() {
        flags |= FLAG_READ_ONLY;
    }
    flags
}

fn read_exact_or_eof(stream: &mut impl Read, buffer: &mut [u8]) -> Result<bool, ConnectionEnd> {
    match stream.read_exact(buffer) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs the handshake; `None` when the client ended it (abort or hang-up).
fn handshake<S: Stream>(
    stream: &mut S,
    export: &dyn Export,
    config: &ServerConfig,
) -> Result<Option<Session>, ConnectionEnd> {
    // A client has a minute to finish negotiating.
    stream.set_read_timeout(Some(NEGOTIATION_TIMEOUT))?;
    let Some(no_zeroes) = greet(stream)? else { return Ok(None) };
    let mut session = Session { structured: false };
    loop {
        let Some((option, data)) = read_option(stream)? else { return Ok(None) };
        match answer_option(stream, option, &data, &mut session, no_zeroes, export, config)? {
            Negotiation::Continue => {}
            Negotiation::Transmit => break,
            Negotiation::Close => return Ok(None),
        }
    }
    stream.set_read_timeout(None)?;
    Ok(Some(session))
}

/// How long a client has to finish negotiating.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the negotiation goes after an option.
enum Negotiation {
    Continue,
    /// On to the transmission phase.
    Transmit,
    /// The client aborted or went away.
    Close,
}

/// The server's hello (fixed newstyle) and the client's flags: whether the
/// client takes no zeroes, or `None` when it went away.
fn greet<S: Stream>(stream: &mut S) -> Result<Option<bool>, ConnectionEnd> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBD_MAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&hello)?;
    let mut client_flags = [0u8; 4];
    if !read_exact_or_eof(stream, &mut client_flags)? {
        return Ok(None);
    }
    let client_flags = u32::from_be_bytes(client_flags);
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(protocol(format!("unknown client flags {client_flags:#x}")));
    }
    Ok(Some(client_flags & FLAG_C_NO_ZEROES != 0))
}

/// The client's next option and its data (at most [`OPTION_BYTES_MAX`]),
/// or `None` when it went away.
fn read_option<S: Stream>(stream: &mut S) -> Result<Option<(u32, Vec<u8>)>, ConnectionEnd> {
    let mut header = [0u8; 16];
    if !read_exact_or_eof(stream, &mut header)? {
        return Ok(None);
    }
    let magic = u64::from_be_bytes(header[0..8].try_into().expect("8 bytes"));
    if magic != IHAVEOPT {
        return Err(protocol(format!("bad option magic {magic:#x}")));
    }
    let option = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
    let length = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes"));
    if length > OPTION_BYTES_MAX {
        return Err(protocol(format!("option {option} of {length} bytes is too large")));
    }
    let mut data = vec![0u8; length as usize];
    if !read_exact_or_eof(stream, &mut data)? {
        return Ok(None);
    }
    Ok(Some((option, data)))
}

/// Answers one option.
fn answer_option<S: Stream>(
    stream: &mut S,
    option: u32,
    data: &[u8],
    session: &mut Session,
    no_zeroes: bool,
    export: &dyn Export,
    config: &ServerConfig,
) -> Result<Negotiation, ConnectionEnd> {
    let reply = |reply: u32, data: &[u8]| option_reply(option, reply, data);
    match option {
        OPT_EXPORT_NAME => {
            // The old way in: no error reply is possible, so an unknown
            // name closes the connection.
            if !name_matches(data, config) {
                return Err(protocol("NBD_OPT_EXPORT_NAME names an unknown export"));
            }
            let mut out = Vec::with_capacity(134);
            out.extend_from_slice(&export.size().to_be_bytes());
            out.extend_from_slice(&transmission_flags(export).to_be_bytes());
            if !no_zeroes {
                out.extend_from_slice(&[0u8; 124]);
            }
            stream.write_all(&out)?;
            return Ok(Negotiation::Transmit);
        }
        OPT_ABORT => {
            // The client may already have gone; the ACK is a courtesy.
            let _ = stream.write_all(&reply(REP_ACK, &[]));
            return Ok(Negotiation::Close);
        }
        OPT_LIST if !data.is_empty() => {
            stream.write_all(&reply(REP_ERR_INVALID, b"NBD_OPT_LIST takes no data"))?;
        }
        OPT_LIST => {
            let mut server = Vec::new();
            server.extend_from_slice(&(config.name.len() as u32).to_be_bytes());
            server.extend_from_slice(config.name.as_bytes());
            stream.write_all(&reply(REP_SERVER, &server))?;
            stream.write_all(&reply(REP_ACK, &[]))?;
        }
        OPT_STRUCTURED_REPLY if !data.is_empty() => {
            stream.write_all(&reply(REP_ERR_INVALID, b"NBD_OPT_STRUCTURED_REPLY takes no data"))?;
        }
        OPT_STRUCTURED_REPLY => {
            session.structured = true;
            stream.write_all(&reply(REP_ACK, &[]))?;
        }
        OPT_INFO | OPT_GO => match info_replies(option, data, export, config) {
            Ok(out) => {
                stream.write_all(&out)?;
                if option == OPT_GO {
                    return Ok(Negotiation::Transmit);
                }
            }
            Err(refusal) => stream.write_all(&refusal)?,
        },
        OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT if session.structured => {
            // No metadata contexts are offered: an empty list.
            stream.write_all(&reply(REP_ACK, &[]))?;
        }
        OPT_STARTTLS => {
            stream.write_all(&reply(REP_ERR_POLICY, b"TLS is not offered on this socket"))?;
        }
        _ => {
            let message = format!("option {option} is not supported");
            stream.write_all(&reply(REP_ERR_UNSUP, message.as_bytes()))?;
        }
    }
    Ok(Negotiation::Continue)
}

/// The replies to NBD_OPT_INFO or NBD_OPT_GO: the export's size and flags,
/// the information asked for, block sizes, the ACK; or the error reply.
fn info_replies(option: u32, data: &[u8], export: &dyn Export, config: &ServerConfig) -> Result<Vec<u8>, Vec<u8>> {
    let reply = |reply: u32, data: &[u8]| option_reply(option, reply, data);
    let request = InfoRequest::decode(data).map_err(|e| reply(REP_ERR_INVALID, e.to_string().as_bytes()))?;
    if !request.name.is_empty() && request.name != config.name {
        let message = format!("no export named {:?}; this server has {:?}", request.name, config.name);
        return Err(reply(REP_ERR_UNKNOWN, message.as_bytes()));
    }
    let mut out = reply(REP_INFO, &info_export(export.size(), transmission_flags(export)));
    for asked in &request.requests {
        let info = match *asked {
            INFO_NAME => {
                let mut name = INFO_NAME.to_be_bytes().to_vec();
                name.extend_from_slice(config.name.as_bytes());
                name
            }
            INFO_DESCRIPTION if !config.description.is_empty() => {
                let mut description = INFO_DESCRIPTION.to_be_bytes().to_vec();
                description.extend_from_slice(config.description.as_bytes());
                description
            }
            _ => continue,
        };
        out.extend_from_slice(&reply(REP_INFO, &info));
    }
    // Always sent: clients that did not ask may ignore it.
    out.extend_from_slice(&reply(REP_INFO, &info_block_size(1, 4096, config.request_bytes_max)));
    out.extend_from_slice(&reply(REP_ACK, &[]));
    Ok(out)
}

fn name_matches(data: &[u8], config: &ServerConfig) -> bool {
    data.is_empty() || data == config.name.as_bytes()
}

/// A request ready for a worker: the header and, for WRITE, its payload.
struct Work {
    request: Request,
    payload: Vec<u8>,
}

fn transmission<S: Stream>(
    stream: S,
    export: Arc<dyn Export>,
    config: &ServerConfig,
    session: Session,
    stats: &ServerStats,
) -> Result<(), ConnectionEnd> {
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    let (sender, receiver) = sync_channel::<Work>(config.workers * 2);
    let receiver = Arc::new(Mutex::new(receiver));
    let workers: Vec<_> = (0..config.workers.max(1))
        .map(|_| {
            let (export, writer, receiver) = (export.clone(), writer.clone(), receiver.clone());
            std::thread::spawn(move || work(export.as_ref(), &*writer, &receiver, session))
        })
        .collect();
    let outcome = read_requests(stream, export.as_ref(), config, sender, &writer, session, stats);
    for worker in workers {
        let _ = worker.join();
    }
    let writer = writer.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writer.shutdown();
    outcome
}

/// Reads requests until DISC, end of stream or a protocol error, and hands
/// them to the workers. Requests that can be refused without touching the
/// export are answered here.
fn read_requests<S: Stream>(
    mut stream: S,
    export: &dyn Export,
    config: &ServerConfig,
    sender: std::sync::mpsc::SyncSender<Work>,
    writer: &Mutex<S>,
    session: Session,
    stats: &ServerStats,
) -> Result<(), ConnectionEnd> {
    let size = export.size();
    loop {
        let mut header = [0u8; REQUEST_BYTES];
        if !read_exact_or_eof(&mut stream, &mut header)? {
            return Ok(());
        }
        let request = match Request::decode(&header) {
            Ok(request) => request,
            Err(e) => return Err(protocol(e.to_string())),
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut payload = Vec::new();
        if request.command == Command::Write {
            if request.length > config.request_bytes_max {
                // Too large to read into memory: the stream cannot be resynchronised.
                reply_error(writer, &request, session, EINVAL, "write larger than the maximum block size")?;
                return Err(protocol(format!("write of {} bytes exceeds the maximum", request.length)));
            }
            // Read into fresh capacity: no zeroing of a buffer about to be filled.
            payload = Vec::with_capacity(request.length as usize);
            let read = Read::by_ref(&mut stream).take(u64::from(request.length)).read_to_end(&mut payload)?;
            if read != request.length as usize {
                return Err(protocol("connection closed in the middle of a write payload"));
            }
        }
        let refusal = match request.command {
            _ if request.has_unknown_flags() => Some((EINVAL, "unknown command flags")),
            Command::Disconnect => return Ok(()),
            Command::Read if request.length > config.request_bytes_max => {
                Some((EINVAL, "read larger than the maximum block size"))
            }
            Command::Read | Command::Cache if !request.in_range(size) => {
                Some((EINVAL, "request past the end of the export"))
            }
            Command::Write | Command::Trim | Command::WriteZeroes if export.read_only() => {
                Some((EPERM, "the export is read-only"))
            }
            Command::Write | Command::Trim | Command::WriteZeroes if !request.in_range(size) => {
                Some((ENOSPC, "request past the end of the export"))
            }
            Command::BlockStatus | Command::Other(_) => Some((EINVAL, "command not supported")),
            _ => None,
        };
        if let Some((error, message)) = refusal {
            reply_error(writer, &request, session, error, message)?;
            continue;
        }
        if sender.send(Work { request, payload }).is_err() {
            return Err(ConnectionEnd::Io(io::Error::other("workers stopped")));
        }
    }
}

fn work<S: Stream>(export: &dyn Export, writer: &Mutex<S>, receiver: &Mutex<Receiver<Work>>, session: Session) {
    loop {
        let next = receiver.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(Work { request, payload }) = next else { return };
        let fua = request.fua();
        let (offset, length) = (request.offset, u64::from(request.length));
        let outcome = match request.command {
            Command::Read => {
                let mut data = vec![0u8; request.length as usize];
                match export.read(offset, &mut data) {
                    Ok(()) => {
                        if reply_read(writer, &request, session, &data).is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
            Command::Write => export.write_owned(offset, payload, fua),
            Command::Flush => export.flush(),
            Command::Trim => export.trim(offset, length, fua),
            Command::WriteZeroes => {
                let may_trim = request.flags & CMD_FLAG_NO_HOLE == 0;
                export.write_zeroes(offset, length, may_trim, fua)
            }
            // Nothing to prefetch: the image is local.
            Command::Cache => Ok(()),
            Command::Disconnect | Command::BlockStatus | Command::Other(_) => {
                unreachable!("refused before dispatch")
            }
        };
        let sent = match outcome {
            Ok(()) => writer.lock().unwrap_or_else(|p| p.into_inner()).write_all(&simple_reply(request.cookie, 0)),
            Err(e) => reply_error(writer, &request, session, errno_of(&e), &e.to_string()),
        };
        if sent.is_err() {
            return;
        }
    }
}

fn errno_of(error: &io::Error) -> u32 {
    match error.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ENOSPC,
        Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS) => EPERM,
        Some(libc::ENOMEM) => ENOMEM,
        Some(libc::EOPNOTSUPP) => ENOTSUP,
        _ => EIO,
    }
}

fn reply_read<S: Stream>(writer: &Mutex<S>, request: &Request, session: Session, data: &[u8]) -> io::Result<()> {
    let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
    if session.structured {
        let header = structured_header(request.cookie, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 8 + data.len() as u32);
        let mut head = Vec::with_capacity(28);
        head.extend_from_slice(&header);
        head.extend_from_slice(&request.offset.to_be_bytes());
        writer.write_all(&head)?;
    } else {
        writer.write_all(&simple_reply(request.cookie, 0))?;
    }
    writer.write_all(data)
}

fn reply_error<S: Stream>(
    writer: &Mutex<S>,
    request: &Request,
    session: Session,
    error: u32,
    message: &str,
) -> io::Result<()> {
    let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
    if session.structured && request.command == Command::Read {
        writer.write_all(&structured_error(request.cookie, error, message))
    } else {
        writer.write_all(&simple_reply(request.cookie, error))
    }
}
