//! Bounds-checked primitive readers and writers for the wire format.
//!
//! Every read checks the remaining length before touching (or allocating for) the data, and
//! every error names the field it was reading.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::DecodeError;

/// Cursor over one message body.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    fn need(&self, field: &'static str, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            return Err(DecodeError::Truncated { field, need: n, have: self.buf.remaining() });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(field, 1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(field, 2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(field, 4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(field, 8)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.need(field, 8)?;
        Ok(self.buf.get_i64())
    }

    /// A `u16`-length-prefixed byte string of at most `cap` bytes (zero-copy).
    pub(crate) fn bytes16(&mut self, field: &'static str, cap: usize) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > cap {
            return Err(DecodeError::TooLong { field, len, cap });
        }
        self.need(field, len)?;
        Ok(self.buf.split_to(len))
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `cap` bytes.
    pub(crate) fn string(&mut self, field: &'static str, cap: usize) -> Result<String, DecodeError> {
        let raw = self.bytes16(field, cap)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// A name (node or stream): a string that passes [`super::validate_name`].
    pub(crate) fn name(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let s = self.string(field, super::MAX_NAME_LEN)?;
        super::validate_name(&s).map_err(|reason| DecodeError::InvalidName { field, reason })?;
        Ok(s)
    }

    /// A `u16` element count of at most `cap`; the caller reads the elements.
    pub(crate) fn count(&mut self, field: &'static str, cap: usize) -> Result<usize, DecodeError> {
        let n = usize::from(self.u16(field)?);
        if n > cap {
            return Err(DecodeError::TooMany { field, count: n, cap });
        }
        Ok(n)
    }

    /// Everything left (zero-copy).
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.remaining()
    }
}

/// Writers matching [`Reader`]. Encoding never fails for values that decode; lengths beyond a
/// field's `u16` range are a programming error caught by the caller's validation, and are
/// truncated here rather than written wrong.
pub(crate) trait WriteExt {
    fn put_bytes16(&mut self, b: &[u8]);
    fn put_string(&mut self, s: &str) {
        self.put_bytes16(s.as_bytes());
    }
    fn put_count(&mut self, n: usize);
}

impl WriteExt for BytesMut {
    fn put_bytes16(&mut self, b: &[u8]) {
        let len = b.len().min(usize::from(u16::MAX));
        self.put_u16(len as u16);
        self.put_slice(&b[..len]);
    }

    fn put_count(&mut self, n: usize) {
        self.put_u16(n.min(usize::from(u16::MAX)) as u16);
    }
}
