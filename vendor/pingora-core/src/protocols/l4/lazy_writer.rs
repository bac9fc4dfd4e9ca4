// [Rempart patch 5] A write buffer that exists only while bytes wait in it.

//! The write buffer of an L4 stream, allocated when a write is to be buffered and freed once
//! flushed: an idle keep-alive connection holds no write buffer. Otherwise it behaves as
//! tokio's `BufWriter`: a write that does not fit flushes first, a write as large as the
//! capacity goes straight through, reads pass through.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub(crate) struct LazyBufWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    capacity: usize,
}

impl<W: AsyncWrite + Unpin> LazyBufWriter<W> {
    pub(crate) fn with_capacity(capacity: usize, inner: W) -> Self {
        LazyBufWriter {
            inner,
            buf: Vec::new(),
            written: 0,
            capacity,
        }
    }

    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// [Rempart patch 8] No byte waits to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.written >= self.buf.len()
    }

    pub(crate) fn into_inner(self) -> W {
        self.inner
    }

    /// Write out what the buffer holds, then free it.
    fn flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..])) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write the buffered data",
                    )))
                }
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn buffer(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.capacity);
        }
        self.buf.extend_from_slice(data);
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for LazyBufWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.buf.len() + data.len() > me.capacity {
            ready!(me.flush_buf(cx))?;
        }
        if data.len() >= me.capacity {
            Pin::new(&mut me.inner).poll_write(cx, data)
        } else {
            me.buffer(data);
            Poll::Ready(Ok(data.len()))
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let total = bufs.iter().map(|b| b.len()).fold(0usize, usize::saturating_add);
        if me.buf.len().saturating_add(total) > me.capacity {
            ready!(me.flush_buf(cx))?;
        }
        if total >= me.capacity {
            Pin::new(&mut me.inner).poll_write_vectored(cx, bufs)
        } else {
            for b in bufs {
                me.buffer(b);
            }
            Poll::Ready(Ok(total))
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for LazyBufWriter<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
