//! Opening inputs: files, `-` for stdin, gzip detected from the content (not the name).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use crate::error::{Error, Result};

/// A boxed input stream.
pub type Input = Box<dyn Read + Send>;

/// Wraps a reader, decompressing it when it starts with the gzip magic bytes.
/// Concatenated gzip members (as `cat a.gz b.gz` makes) are read through.
pub fn maybe_gunzip<R: Read + Send + 'static>(reader: R) -> Result<Input> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf().map_err(Error::io("reading input"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(GzipInput(MultiGzDecoder::new(buffered))))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Opens a path (`-` is stdin) for reading, gunzipping when needed.
pub fn open(path: &Path) -> Result<Input> {
    if path.as_os_str() == "-" {
        return maybe_gunzip(io::stdin());
    }
    let file = File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    maybe_gunzip(file)
}

/// Gives gzip errors a message that says they are gzip errors.
struct GzipInput<R>(MultiGzDecoder<R>);

impl<R: BufRead> Read for GzipInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidData
            | io::ErrorKind::UnexpectedEof => {
                io::Error::new(e.kind(), format!("corrupt or truncated gzip data ({e})"))
            }
            _ => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn gzip_is_detected_by_content_and_members_concatenate() {
        let mut both = Vec::new();
        for part in ["hello ", "world"] {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(part.as_bytes()).unwrap();
            both.extend(enc.finish().unwrap());
        }
        let mut s = String::new();
        maybe_gunzip(io::Cursor::new(both))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello world");
        let mut plain = String::new();
        maybe_gunzip(io::Cursor::new(b"plain".to_vec()))
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "plain");
    }

    #[test]
    fn truncated_gzip_is_an_error_not_a_panic() {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&[b'x'; 10_000]).unwrap();
        let mut data = enc.finish().unwrap();
        data.truncate(data.len() / 2);
        let mut s = Vec::new();
        let err = maybe_gunzip(io::Cursor::new(data))
            .unwrap()
            .read_to_end(&mut s)
            .unwrap_err();
        assert!(err.to_string().contains("gzip"), "{err}");
    }
}
