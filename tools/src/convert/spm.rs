//! A SentencePiece `tokenizer.model` read without the sentencepiece library: the file is a
//! protobuf `ModelProto`, of which the converter needs only the pieces (field 1, repeated
//! `SentencePiece { string piece = 1; float score = 2; Type type = 3 [default NORMAL]; }`).
//! Every other field is skipped by its wire type. A malformed file is a named error, never a
//! panic: lengths are checked against the bytes that remain before anything is sliced.

use std::path::{Path, PathBuf};

/// SentencePiece's piece types (`ModelProto.SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry, by id (its index).
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub ty: PieceType,
}

/// Why a `tokenizer.model` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: not a SentencePiece model: {message} (at byte {offset})")]
pub struct SpmError {
    pub path: PathBuf,
    pub offset: usize,
    pub message: String,
}

/// Reads the pieces of the model at `path` (already loaded as `bytes`).
pub fn read_pieces(path: &Path, bytes: &[u8]) -> Result<Vec<Piece>, SpmError> {
    let err = |offset: usize, message: String| SpmError {
        path: path.to_path_buf(),
        offset,
        message,
    };
    let mut pieces = Vec::new();
    let mut r = Reader { bytes, pos: 0 };
    while !r.done() {
        let (field, wire) = r.tag().map_err(|(o, m)| err(o, m))?;
        if field == 1 {
            if wire != WIRE_LEN {
                return Err(err(r.pos, format!("pieces field has wire type {wire}")));
            }
            let start = r.pos;
            let body = r.len_delimited().map_err(|(o, m)| err(o, m))?;
            let piece = read_piece(body)
                .map_err(|(o, m)| err(start + o, format!("piece {}: {m}", pieces.len())))?;
            pieces.push(piece);
        } else {
            r.skip(wire).map_err(|(o, m)| err(o, m))?;
        }
    }
    if pieces.is_empty() {
        return Err(err(bytes.len(), "no pieces".into()));
    }
    Ok(pieces)
}

fn read_piece(bytes: &[u8]) -> Result<Piece, (usize, String)> {
    let mut r = Reader { bytes, pos: 0 };
    let mut text = None;
    let mut score = 0.0f32;
    let mut ty = PieceType::Normal;
    while !r.done() {
        let (field, wire) = r.tag()?;
        match (field, wire) {
            (1, WIRE_LEN) => {
                let at = r.pos;
                let b = r.len_delimited()?;
                let s = std::str::from_utf8(b)
                    .map_err(|_| (at, "piece text is not UTF-8".to_string()))?;
                text = Some(s.to_string());
            }
            (2, WIRE_32) => {
                let b = r.take(4)?;
                score = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            (3, WIRE_VARINT) => {
                let at = r.pos;
                let v = r.varint()?;
                ty = PieceType::from_proto(v)
                    .ok_or_else(|| (at, format!("unknown piece type {v}")))?;
            }
            (1..=3, _) => return Err((r.pos, format!("field {field} has wire type {wire}"))),
            _ => r.skip(wire)?,
        }
    }
    let text = text.ok_or_else(|| (0, "no piece text".to_string()))?;
    Ok(Piece { text, score, ty })
}

const WIRE_VARINT: u8 = 0;
const WIRE_64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_32: u8 = 5;

/// A protobuf cursor; errors are `(offset, message)`.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], (usize, String)> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                (
                    self.pos,
                    format!(
                        "{n} bytes needed, {} left",
                        self.bytes.len().saturating_sub(self.pos)
                    ),
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, (usize, String)> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| (start, "truncated varint".to_string()))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err((start, "varint longer than 10 bytes".into()))
    }

    fn tag(&mut self) -> Result<(u64, u8), (usize, String)> {
        let at = self.pos;
        let t = self.varint()?;
        let (field, wire) = (t >> 3, (t & 7) as u8);
        if field == 0 {
            return Err((at, "field number 0".into()));
        }
        Ok((field, wire))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], (usize, String)> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| (self.pos, format!("length {n} too large")))?;
        self.take(n)
    }

    fn skip(&mut self, wire: u8) -> Result<(), (usize, String)> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_32 => self.take(4).map(drop),
            other => Err((self.pos, format!("unsupported wire type {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn piece(text: &str, score: Option<f32>, ty: Option<u64>) -> Vec<u8> {
        let mut p = vec![0x0a];
        varint(text.len() as u64, &mut p);
        p.extend_from_slice(text.as_bytes());
        if let Some(s) = score {
            p.push(0x15);
            p.extend_from_slice(&s.to_le_bytes());
        }
        if let Some(t) = ty {
            p.push(0x18);
            varint(t, &mut p);
        }
        let mut out = vec![0x0a];
        varint(p.len() as u64, &mut out);
        out.extend(p);
        out
    }

    #[test]
    fn reads_pieces_and_skips_other_fields() {
        let mut model = piece("<unk>", None, Some(2));
        model.extend(piece("\u{2581}the", Some(-1.5), None));
        model.extend(piece("<0x0A>", Some(0.0), Some(6)));
        // trainer_spec (field 2) with one varint field inside
        model.extend([0x12, 0x02, 0x08, 0x01]);
        let got = read_pieces(Path::new("m"), &model).unwrap();
        assert_eq!(
            got,
            [
                Piece {
                    text: "<unk>".into(),
                    score: 0.0,
                    ty: PieceType::Unknown
                },
                Piece {
                    text: "\u{2581}the".into(),
                    score: -1.5,
                    ty: PieceType::Normal
                },
                Piece {
                    text: "<0x0A>".into(),
                    score: 0.0,
                    ty: PieceType::Byte
                },
            ]
        );
    }

    #[test]
    fn malformed_models_are_errors() {
        let good = piece("a", Some(1.0), Some(1));
        for bad in [
            good[..good.len() - 2].to_vec(), // truncated
            vec![
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            piece("a", None, Some(9)), // unknown type
            vec![0x0b],                // group wire type
            vec![],                    // no pieces
            vec![0x12, 0x00],          // only a trainer spec
        ] {
            assert!(read_pieces(Path::new("m"), &bad).is_err(), "{bad:?}");
        }
    }
}
