use std::io::{self, Read};

use crate::request::MAX_HEADERS;

use bytes::BytesMut;
pub struct Response<'a> {
    headers: [&'static str; MAX_HEADERS],
    headers_len: usize,
    status_message: StatusMessage,
    body: Body,
    rsp_buf: &'a mut BytesMut,
    /// leviathan patch 6: end the connection once this response is written.
    close: bool,
}

/// leviathan patch 6: what the connection loop does after writing a response's head:
/// stream its body from a reader, and close.
pub(crate) struct Tail {
    pub stream: Option<(Box<dyn Read + Send>, u64)>,
    pub close: bool,
}

enum Body {
    Str(&'static str),
    Vec(Vec<u8>),
    Dummy,
    /// leviathan patch 6: `len` bytes read from a reader as they are written, so a
    /// large body never sits in memory.
    Stream(Box<dyn Read + Send>, u64),
}

struct StatusMessage {
    code: usize,
    msg: &'static str,
}

impl<'a> Response<'a> {
    pub(crate) fn new(rsp_buf: &'a mut BytesMut) -> Response<'a> {
        let headers: [&'static str; MAX_HEADERS] = [""; MAX_HEADERS];

        Response {
            headers,
            headers_len: 0,
            body: Body::Dummy,
            status_message: StatusMessage {
                code: 200,
                msg: "Ok",
            },
            rsp_buf,
            close: false,
        }
    }

    /// The body is `len` bytes read from `reader` while they are written out (a large
    /// file, say). A reader that ends early or fails closes the connection, since the
    /// `Content-Length` already sent can no longer be kept. leviathan patch 6.
    pub fn body_stream(&mut self, reader: Box<dyn Read + Send>, len: u64) {
        self.body = Body::Stream(reader, len);
    }

    /// Ends the connection once this response is written (`Connection: close` is
    /// sent): for an answer given without reading the request's body, whose bytes
    /// would otherwise be read as the next request. leviathan patch 6.
    pub fn close(&mut self) -> &mut Self {
        if !self.close {
            self.close = true;
            self.header("Connection: close");
        }
        self
    }

    #[inline]
    pub fn status_code(&mut self, code: usize, msg: &'static str) -> &mut Self {
        self.status_message = StatusMessage { code, msg };
        self
    }

    #[inline]
    pub fn header(&mut self, header: &'static str) -> &mut Self {
        self.headers[self.headers_len] = header;
        self.headers_len += 1;
        self
    }

    #[inline]
    pub fn body(&mut self, s: &'static str) {
        self.body = Body::Str(s);
    }

    #[inline]
    pub fn body_vec(&mut self, v: Vec<u8>) {
        self.body = Body::Vec(v);
    }

    #[inline]
    pub fn body_mut(&mut self) -> &mut BytesMut {
        match self.body {
            Body::Dummy => {}
            Body::Str(s) => {
                self.rsp_buf.extend_from_slice(s.as_bytes());
                self.body = Body::Dummy;
            }
            Body::Vec(ref v) => {
                self.rsp_buf.extend_from_slice(v);
                self.body = Body::Dummy;
            }
            Body::Stream(..) => self.body = Body::Dummy,
        }
        self.rsp_buf
    }

    #[inline]
    fn body_len(&self) -> u64 {
        match self.body {
            Body::Dummy => self.rsp_buf.len() as u64,
            Body::Str(s) => s.len() as u64,
            Body::Vec(ref v) => v.len() as u64,
            Body::Stream(_, n) => n,
        }
    }

    #[inline]
    fn get_body(&mut self) -> &[u8] {
        match self.body {
            Body::Dummy => self.rsp_buf.as_ref(),
            Body::Str(s) => s.as_bytes(),
            Body::Vec(ref v) => v,
            Body::Stream(..) => &[],
        }
    }
}

impl<'a> Drop for Response<'a> {
    fn drop(&mut self) {
        self.rsp_buf.clear();
    }
}

pub(crate) fn encode(mut rsp: Response, buf: &mut BytesMut) -> Tail {
    if rsp.status_message.code == 200 {
        buf.extend_from_slice(b"HTTP/1.1 200 Ok\r\nServer: M\r\nDate: ");
    } else {
        buf.extend_from_slice(b"HTTP/1.1 ");
        let mut code = itoa::Buffer::new();
        buf.extend_from_slice(code.format(rsp.status_message.code).as_bytes());
        buf.extend_from_slice(b" ");
        buf.extend_from_slice(rsp.status_message.msg.as_bytes());
        buf.extend_from_slice(b"\r\nServer: M\r\nDate: ");
    }
    crate::date::append_date(buf);
    buf.extend_from_slice(b"\r\nContent-Length: ");
    let mut length = itoa::Buffer::new();
    buf.extend_from_slice(length.format(rsp.body_len()).as_bytes());

    // SAFETY: we already have bound check when insert headers
    let headers = unsafe { rsp.headers.get_unchecked(..rsp.headers_len) };
    for h in headers {
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(h.as_bytes());
    }

    buf.extend_from_slice(b"\r\n\r\n");
    buf.extend_from_slice(rsp.get_body());
    let stream = match std::mem::replace(&mut rsp.body, Body::Dummy) {
        Body::Stream(reader, len) => Some((reader, len)),
        _ => None,
    };
    Tail {
        stream,
        close: rsp.close,
    }
}

#[cold]
pub(crate) fn encode_error(e: io::Error, buf: &mut BytesMut) {
    error!("error in service: err = {:?}", e);
    let msg_string = e.to_string();
    let msg = msg_string.as_bytes();

    buf.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\nServer: M\r\nDate: ");
    crate::date::append_date(buf);
    buf.extend_from_slice(b"\r\nContent-Length: ");
    let mut length = itoa::Buffer::new();
    buf.extend_from_slice(length.format(msg.len()).as_bytes());

    buf.extend_from_slice(b"\r\n\r\n");
    buf.extend_from_slice(msg);
}
