//! A minimal bencode writer for tracker answers: byte strings, integers, dictionaries whose keys
//! the caller writes in sorted order (as bencode requires), lists.

/// Appends bencode to a byte buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    /// `d`: starts a dictionary.
    pub fn dict(&mut self) -> &mut Self {
        self.out.push(b'd');
        self
    }

    /// `l`: starts a list.
    pub fn list(&mut self) -> &mut Self {
        self.out.push(b'l');
        self
    }

    /// `e`: ends a dictionary or list.
    pub fn end(&mut self) -> &mut Self {
        self.out.push(b'e');
        self
    }

    /// A byte string.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(itoa(b.len() as i64).as_bytes());
        self.out.push(b':');
        self.out.extend_from_slice(b);
        self
    }

    /// A byte string whose length is known before its bytes are pushed with [`Writer::raw`].
    pub fn bytes_header(&mut self, len: usize) -> &mut Self {
        self.out.extend_from_slice(itoa(len as i64).as_bytes());
        self.out.push(b':');
        self
    }

    /// Raw bytes (the body of a string started with [`Writer::bytes_header`]).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// An integer.
    pub fn int(&mut self, i: i64) -> &mut Self {
        self.out.push(b'i');
        self.out.extend_from_slice(itoa(i).as_bytes());
        self.out.push(b'e');
        self
    }
}

fn itoa(i: i64) -> String {
    i.to_string()
}

/// A complete `failure reason` dictionary.
pub fn failure(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(reason.len() + 24);
    Writer::new(&mut out)
        .dict()
        .bytes(b"failure reason")
        .bytes(reason.as_bytes())
        .end();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_is_a_bencoded_dictionary() {
        assert_eq!(failure("bad"), b"d14:failure reason3:bade".to_vec());
    }

    #[test]
    fn nested_values_encode() {
        let mut out = Vec::new();
        Writer::new(&mut out)
            .dict()
            .bytes(b"a")
            .list()
            .int(-3)
            .bytes(b"")
            .end()
            .end();
        assert_eq!(out, b"d1:ali-3e0:ee".to_vec());
    }
}
