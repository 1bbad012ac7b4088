//! Undoing an upstream's `Content-Encoding`.
//!
//! `identity`, `gzip` (and its old name `x-gzip`) and `deflate` are read;
//! anything else, or more than one encoding, is refused rather than
//! guessed at. The decoded size is bounded like the raw one, so a small
//! compressed body cannot expand without limit.

use std::io::Read;

use bytes::Bytes;
use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
use http::HeaderValue;

use super::{MAX_BODY_BYTES, UpstreamError};

pub(super) fn decode(encoding: Option<&HeaderValue>, body: Bytes) -> Result<Bytes, UpstreamError> {
    let Some(encoding) = encoding else {
        return Ok(body);
    };
    let name = encoding
        .to_str()
        .map_err(|_| UpstreamError::Encoding("non-ascii".into()))?
        .trim()
        .to_ascii_lowercase();
    match name.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => inflate(GzDecoder::new(&body[..]), "gzip"),
        // RFC 9110's `deflate` is zlib-wrapped; some servers send the raw
        // stream, which the zlib header check tells apart.
        "deflate" => inflate(ZlibDecoder::new(&body[..]), "deflate")
            .or_else(|_| inflate(DeflateDecoder::new(&body[..]), "deflate")),
        other => Err(UpstreamError::Encoding(truncated(other))),
    }
}

fn inflate(reader: impl Read, format: &'static str) -> Result<Bytes, UpstreamError> {
    let mut out = Vec::new();
    reader
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| UpstreamError::Corrupt(format))?;
    if out.len() > MAX_BODY_BYTES {
        return Err(UpstreamError::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// An encoding name fit for a log line.
fn truncated(name: &str) -> String {
    name.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};

    use super::*;

    const TEXT: &[u8] = br#"{"data":{"id":"x"}}"#;

    fn decoded(encoding: &str, body: Vec<u8>) -> Result<Bytes, UpstreamError> {
        decode(
            Some(&HeaderValue::from_str(encoding).unwrap()),
            Bytes::from(body),
        )
    }

    #[test]
    fn reads_identity_gzip_and_both_deflates() {
        assert_eq!(decode(None, Bytes::from_static(TEXT)).unwrap(), TEXT);
        assert_eq!(decoded("identity", TEXT.to_vec()).unwrap(), TEXT);
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        gzip.write_all(TEXT).unwrap();
        assert_eq!(decoded("GZIP", gzip.finish().unwrap()).unwrap(), TEXT);
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(TEXT).unwrap();
        assert_eq!(decoded("deflate", zlib.finish().unwrap()).unwrap(), TEXT);
        let mut raw = DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(TEXT).unwrap();
        assert_eq!(decoded("deflate", raw.finish().unwrap()).unwrap(), TEXT);
    }

    #[test]
    fn refuses_other_encodings_and_corrupt_bodies() {
        for encoding in ["br", "zstd", "gzip, gzip", "compress"] {
            assert!(
                matches!(
                    decoded(encoding, TEXT.to_vec()),
                    Err(UpstreamError::Encoding(_))
                ),
                "{encoding}"
            );
        }
        assert!(matches!(
            decoded("gzip", TEXT.to_vec()),
            Err(UpstreamError::Corrupt("gzip"))
        ));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
        gzip.write_all(&vec![b' '; MAX_BODY_BYTES + 10]).unwrap();
        let small = gzip.finish().unwrap();
        assert!(small.len() < 16 * 1024);
        assert!(matches!(
            decoded("gzip", small),
            Err(UpstreamError::TooLarge)
        ));
    }
}
