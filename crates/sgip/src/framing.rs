//! Framed reading and writing of PDUs over any async byte stream.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;
use crate::pdu::{frame_len, Pdu, DEFAULT_MAX_FRAME_LEN};

/// A `tokio_util` codec for SGIP frames, for use with `Framed`.
#[derive(Debug, Clone, Copy)]
pub struct SgipCodec {
    max_frame_len: usize,
}

impl SgipCodec {
    /// A codec refusing frames above `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }
}

impl Default for SgipCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder for SgipCodec {
    type Item = Pdu;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, Error> {
        let Some(len) = frame_len(src, self.max_frame_len)? else {
            return Ok(None);
        };
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let frame = src.split_to(len).freeze();
        Pdu::decode(frame).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, Error> {
        match self.decode(src)? {
            Some(pdu) => Ok(Some(pdu)),
            None if src.is_empty() => Ok(None),
            None => Err(Error::TruncatedFrame {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<&Pdu> for SgipCodec {
    type Error = Error;

    fn encode(&mut self, item: &Pdu, dst: &mut BytesMut) -> Result<(), Error> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<Pdu> for SgipCodec {
    type Error = Error;

    fn encode(&mut self, item: Pdu, dst: &mut BytesMut) -> Result<(), Error> {
        item.encode(dst);
        Ok(())
    }
}

/// Reads whole PDUs from a byte stream.
///
/// The buffer never grows beyond one maximum frame plus one read: a length
/// field is checked against the maximum before any of the body is awaited.
#[derive(Debug)]
pub struct PduReader<R> {
    inner: R,
    buf: BytesMut,
    codec: SgipCodec,
}

impl<R: AsyncRead + Unpin> PduReader<R> {
    /// A reader refusing frames above `max_frame_len` bytes.
    pub fn new(inner: R, max_frame_len: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(4096),
            codec: SgipCodec::new(max_frame_len),
        }
    }

    /// The next PDU; `Ok(None)` when the peer closed cleanly between frames.
    /// A close in the middle of a frame is [`Error::TruncatedFrame`].
    pub async fn read_pdu(&mut self) -> Result<Option<Pdu>, Error> {
        loop {
            if let Some(pdu) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(pdu));
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return self.codec.decode_eof(&mut self.buf);
            }
        }
    }

    /// Whether bytes of an unfinished frame are buffered.
    pub fn has_partial_frame(&self) -> bool {
        self.buf.has_remaining()
    }

    /// The underlying stream.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes PDUs to a byte stream, buffering until [`PduWriter::flush`].
#[derive(Debug)]
pub struct PduWriter<W> {
    inner: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> PduWriter<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(8192),
        }
    }

    /// Queues a PDU; it is sent on the next flush (or when the buffer is large).
    pub async fn write_pdu(&mut self, pdu: &Pdu) -> Result<(), Error> {
        pdu.encode(&mut self.buf);
        if self.buf.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    /// Queues an already encoded frame.
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(frame);
        if self.buf.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// Writes one PDU and flushes.
    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), Error> {
        self.write_pdu(pdu).await?;
        self.flush().await
    }

    /// Flushes and shuts down the write half.
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        self.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// The underlying stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}
