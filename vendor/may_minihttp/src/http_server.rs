//! http server implementation on top of `MAY`

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::ToSocketAddrs;
use std::sync::Arc;

use crate::request::{self, Request};
use crate::response::{self, Response};

#[cfg(unix)]
use bytes::Buf;
use bytes::{BufMut, BytesMut};
#[cfg(unix)]
use may::io::{WaitIo, WaitIoWaker};
use may::net::{TcpListener, TcpStream};
use may::{coroutine, go};

macro_rules! t_c {
    ($e: expr) => {
        match $e {
            Ok(val) => val,
            Err(err) => {
                error!("call = {:?}\nerr = {:?}", stringify!($e), err);
                continue;
            }
        }
    };
}

/// the http service trait
/// user code should supply a type that impl the `call` method for the http server
///
pub trait HttpService {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()>;
}

pub trait HttpServiceFactory: Send + Sized + 'static {
    type Service: HttpService + Send;
    // create a new http service for each connection
    fn new_service(&self, id: usize) -> Self::Service;

    /// Spawns the http service, binding to the given address
    /// return a coroutine that you can cancel it when need to stop the service
    fn start<L: ToSocketAddrs>(self, addr: L) -> io::Result<coroutine::JoinHandle<()>> {
        let listener = TcpListener::bind(addr)?;
        self.start_on(listener)
    }

    /// Serves connections accepted on `listener`, already bound (to port 0, say, or
    /// with a chosen backlog). leviathan patch.
    fn start_on(self, listener: TcpListener) -> io::Result<coroutine::JoinHandle<()>> {
        go!(
            coroutine::Builder::new().name("TcpServerFac".to_owned()),
            move || {
                #[cfg(unix)]
                use std::os::fd::AsRawFd;
                #[cfg(windows)]
                use std::os::windows::io::AsRawSocket;
                // leviathan patch 7: the connections' coroutines end with the acceptor
                // (cancelled when a server stops), so a keep-alive client is not served
                // on by a server that stopped in-process.
                let open = Arc::new(Open::default());
                let _close_all = CloseAll(open.clone());
                for stream in listener.incoming() {
                    // leviathan patch: an accept error (out of file descriptors, say)
                    // is logged once a second at most and waited out, instead of
                    // logged and retried at once in a loop that floods the log.
                    let mut stream = match stream {
                        Ok(s) => s,
                        Err(e) => {
                            static LAST: std::sync::atomic::AtomicU64 =
                                std::sync::atomic::AtomicU64::new(0);
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs());
                            if LAST.swap(now, std::sync::atomic::Ordering::Relaxed) != now {
                                warn!("HTTP: accepting a connection failed: {e}");
                            }
                            coroutine::sleep(std::time::Duration::from_millis(10));
                            continue;
                        }
                    };
                    #[cfg(unix)]
                    let id = stream.as_raw_fd() as usize;
                    #[cfg(windows)]
                    let id = stream.as_raw_socket() as usize;
                    // leviathan patch: replies go out at once (one write per batch of
                    // pipelined requests already), not after the peer's delayed ACK.
                    let _ = stream.set_nodelay(true);
                    let service = self.new_service(id);
                    let builder = may::coroutine::Builder::new().id(id);
                    let open = open.clone();
                    let spawned = go!(builder, move || {
                        let Some(key) = open.enter(stream.waker()) else {
                            return;
                        };
                        if let Err(e) = each_connection_loop(&mut stream, service, &open.closing) {
                            // leviathan patch 7: a client closing its connection ends
                            // the loop with an error too: nothing for an operator.
                            debug!("HTTP connection ended: {e}");
                            stream.shutdown(std::net::Shutdown::Both).ok();
                        }
                        open.leave(key);
                    });
                    if let Err(e) = spawned {
                        warn!("HTTP: no coroutine for a connection: {e}");
                    }
                }
            }
        )
    }
}

/// How to wake each open connection; `None` once the acceptor ended (leviathan patch
/// 7). A connection waiting for its next request sits in `wait_io`, which a coroutine
/// cancel does not end (it clears the cancel and waits again): it is woken instead,
/// and sees `closing`.
#[derive(Default)]
struct Open {
    #[allow(clippy::type_complexity)]
    wakers: std::sync::Mutex<Option<(u64, std::collections::HashMap<u64, WaitIoWaker>)>>,
    closing: std::sync::atomic::AtomicBool,
}

impl Open {
    /// Notes a connection; `None` if the server is closing.
    fn enter(&self, waker: WaitIoWaker) -> Option<u64> {
        if self.closing.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut open = self.wakers.lock().ok()?;
        let (next, map) = open.get_or_insert_with(Default::default);
        *next += 1;
        map.insert(*next, waker);
        Some(*next)
    }

    fn leave(&self, key: u64) {
        if let Ok(mut open) = self.wakers.lock() {
            if let Some((_, map)) = open.as_mut() {
                map.remove(&key);
            }
        }
    }
}

/// Ends every open connection when the acceptor ends (leviathan patch 7): a
/// connection finishes the request it is in, then closes.
struct CloseAll(Arc<Open>);

impl Drop for CloseAll {
    fn drop(&mut self) {
        self.0
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        let open = self.0.wakers.lock().ok().and_then(|mut o| o.take());
        for (_, waker) in open.map(|(_, m)| m).unwrap_or_default() {
            waker.wakeup();
        }
    }
}

#[inline]
#[cold]
pub(crate) fn err<T>(e: io::Error) -> io::Result<T> {
    Err(e)
}

#[cfg(unix)]
#[inline]
fn nonblock_read(stream: &mut impl Read, req_buf: &mut BytesMut) -> io::Result<bool> {
    reserve_buf(req_buf);
    let read_buf: &mut [u8] = unsafe { std::mem::transmute(req_buf.chunk_mut()) };
    let len = read_buf.len();

    let mut read_cnt = 0;
    while read_cnt < len {
        match stream.read(unsafe { read_buf.get_unchecked_mut(read_cnt..) }) {
            Ok(0) => return err(io::Error::new(io::ErrorKind::BrokenPipe, "read closed")),
            Ok(n) => read_cnt += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return err(e),
        }
    }

    unsafe { req_buf.advance_mut(read_cnt) };
    Ok(read_cnt < len)
}

#[cfg(unix)]
#[inline]
fn nonblock_write(stream: &mut impl Write, rsp_buf: &mut BytesMut) -> io::Result<usize> {
    let write_buf = rsp_buf.chunk();
    let len = write_buf.len();
    let mut write_cnt = 0;
    while write_cnt < len {
        match stream.write(unsafe { write_buf.get_unchecked(write_cnt..) }) {
            Ok(0) => return err(io::Error::new(io::ErrorKind::BrokenPipe, "write closed")),
            Ok(n) => write_cnt += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return err(e),
        }
    }
    rsp_buf.advance(write_cnt);
    Ok(write_cnt)
}

const BUF_LEN: usize = 4096 * 8;
#[inline]
pub(crate) fn reserve_buf(buf: &mut BytesMut) {
    let rem = buf.capacity() - buf.len();
    if rem < 1024 {
        buf.reserve(BUF_LEN - rem);
    }
}

/// this is the generic type http server
/// with a type parameter that impl `HttpService` trait
///
pub struct HttpServer<T>(pub T);

#[cfg(unix)]
fn each_connection_loop<T: HttpService>(
    stream: &mut TcpStream,
    mut service: T,
    closing: &std::sync::atomic::AtomicBool,
) -> io::Result<()> {
    let mut req_buf = BytesMut::with_capacity(BUF_LEN);
    let mut rsp_buf = BytesMut::with_capacity(BUF_LEN);
    let mut body_buf = BytesMut::with_capacity(4096);

    loop {
        // leviathan patch 7: the server stopped.
        if closing.load(std::sync::atomic::Ordering::Acquire) {
            let _ = stream.write_all(&rsp_buf);
            return Ok(());
        }
        let read_blocked = nonblock_read(stream.inner_mut(), &mut req_buf)?;

        // prepare the requests, we should make sure the request is fully read
        loop {
            let mut headers = [MaybeUninit::uninit(); request::MAX_HEADERS];
            reserve_buf(&mut rsp_buf);
            let req = match request::decode(&mut headers, &mut req_buf, stream, &mut rsp_buf)? {
                Some(req) => req,
                None => break,
            };
            let mut rsp = Response::new(&mut body_buf);
            match service.call(req, &mut rsp) {
                Ok(()) => {
                    let tail = response::encode(rsp, &mut rsp_buf);
                    // leviathan patch 6: a streamed body follows its head, and a
                    // closing response ends the connection once it is out.
                    if tail.stream.is_some() || tail.close {
                        stream.write_all(&rsp_buf)?;
                        rsp_buf.clear();
                        if let Some((reader, len)) = tail.stream {
                            copy_body(reader, stream, len)?;
                        }
                        if tail.close {
                            linger(stream);
                            return Ok(());
                        }
                    }
                }
                Err(e) => {
                    // leviathan patch: logged, not printed.
                    debug!("service err = {:?}", e);
                    response::encode_error(e, &mut rsp_buf);
                }
            }
            // here need to use no_delay tcp option
            // nonblock_write(stream.inner_mut(), &mut rsp_buf)?;
        }

        // write out the responses
        nonblock_write(stream.inner_mut(), &mut rsp_buf)?;

        if read_blocked {
            stream.wait_io();
        }
    }
}

/// Writes `len` bytes of `reader` to the stream as they are read (leviathan patch 6).
/// A reader that ends early or fails ends the connection: the head promised `len`.
#[cfg(unix)]
fn copy_body(mut reader: Box<dyn Read + Send>, stream: &mut TcpStream, len: u64) -> io::Result<()> {
    let mut chunk = vec![0u8; 256 << 10];
    let mut left = len;
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = reader.read(&mut chunk[..want])?;
        if n == 0 {
            return err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a streamed body ended before its Content-Length",
            ));
        }
        stream.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Closes a connection whose request body may not have been read, the way web servers
/// do ("lingering close", leviathan patch 6): the write side is shut first, then what
/// the client still sends is read and dropped for a moment, so that the kernel does
/// not answer the unread bytes with a reset that destroys the response before the
/// client has read it.
#[cfg(unix)]
fn linger(stream: &mut TcpStream) {
    let _ = stream.flush();
    if stream.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(250)));
    let mut sink = [0u8; 16 << 10];
    let mut dropped = 0usize;
    while std::time::Instant::now() < until && dropped < 64 << 20 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n,
        }
    }
}

#[cfg(not(unix))]
fn each_connection_loop<T: HttpService>(
    stream: &mut TcpStream,
    mut service: T,
    _closing: &std::sync::atomic::AtomicBool,
) -> io::Result<()> {
    let mut req_buf = BytesMut::with_capacity(BUF_LEN);
    let mut rsp_buf = BytesMut::with_capacity(BUF_LEN);
    let mut body_buf = BytesMut::with_capacity(BUF_LEN);
    loop {
        // read the socket for requests
        reserve_buf(&mut req_buf);
        let read_buf: &mut [u8] = unsafe { std::mem::transmute(&mut *req_buf.chunk_mut()) };
        let read_cnt = stream.read(read_buf)?;
        if read_cnt == 0 {
            //connection was closed
            return err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"));
        }
        unsafe { req_buf.advance_mut(read_cnt) };

        // prepare the requests
        if read_cnt > 0 {
            loop {
                let mut headers = [MaybeUninit::uninit(); request::MAX_HEADERS];
                let req = match request::decode(&mut headers, &mut req_buf, stream, &mut rsp_buf)? {
                    Some(req) => req,
                    None => break,
                };
                let mut rsp = Response::new(&mut body_buf);
                match service.call(req, &mut rsp) {
                    Ok(()) => {
                        response::encode(rsp, &mut rsp_buf);
                    }
                    Err(e) => {
                        eprintln!("service err = {:?}", e);
                        response::encode_error(e, &mut rsp_buf);
                    }
                }
            }
        }

        // send the result back to client
        stream.write_all(&rsp_buf)?;
    }
}

impl<T: HttpService + Clone + Send + Sync + 'static> HttpServer<T> {
    /// Spawns the http service, binding to the given address
    /// return a coroutine that you can cancel it when need to stop the service
    pub fn start<L: ToSocketAddrs>(self, addr: L) -> io::Result<coroutine::JoinHandle<()>> {
        let listener = TcpListener::bind(addr)?;
        let service = self.0;
        go!(
            coroutine::Builder::new().name("TcpServer".to_owned()),
            move || {
                for stream in listener.incoming() {
                    let mut stream = t_c!(stream);
                    // t_c!(stream.set_nodelay(true));
                    let service = service.clone();
                    go!(
                        move || if let Err(e) = each_connection_loop(&mut stream, service, &std::sync::atomic::AtomicBool::new(false)) {
                            error!("service err = {:?}", e);
                            stream.shutdown(std::net::Shutdown::Both).ok();
                        }
                    );
                }
            }
        )
    }
}
