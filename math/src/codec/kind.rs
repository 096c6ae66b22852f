//! [`CodecKind`]: the configuration-level name of a codec, its exact wire size, its error bound,
//! the stateless decoder, and the constructor of stateful encoder instances.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::{CodecError, ParseCodecKindError};
use super::{Codec, ErrorBound, MAX_SPAN_LEN, float16, int8, powersgd, raw, topk};

/// Which codec a span uses, with its validated parameter.
///
/// Every peer of a run must agree on it (it is part of the run configuration), because the wire
/// formats are headerless: the decoder derives the exact encoded length from the kind and the
/// span length. CLI names round-trip through [`FromStr`] and [`Display`](fmt::Display):
/// `none`, `fp16`, `bf16`, `int8` (block 64) or `int8:<block>`, `topk:<fraction>`,
/// `powersgd:<rank>`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CodecKind {
    /// Raw little-endian f32, 4 bytes per float. Exact.
    #[serde(rename = "none")]
    None,
    /// IEEE half precision, 2 bytes per float, round to nearest even.
    #[serde(rename = "fp16")]
    Fp16,
    /// bfloat16 (f32 with a 7-bit mantissa), 2 bytes per float, round to nearest even.
    #[serde(rename = "bf16")]
    Bf16,
    /// Symmetric int8 with one f32 absmax scale per block.
    #[serde(rename = "int8")]
    Int8 {
        /// Floats per block.
        block: Int8Block,
    },
    /// Top-k magnitudes with error feedback; sends u32 indices and f32 values.
    #[serde(rename = "topk")]
    TopK {
        /// Fraction of the span sent each step.
        fraction: TopKFraction,
    },
    /// Rank-r PowerSGD with error feedback; sends the factors P and Q.
    #[serde(rename = "powersgd")]
    PowerSgd {
        /// Rank of the approximation.
        rank: PowerSgdRank,
    },
}

/// Int8 block length in floats, 1..=65536. Small blocks track local magnitude better (less error)
/// at 4 bytes of scale per block; 64 costs 1/16 byte per float.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Int8Block(u32);

/// Top-k fraction in (0, 1]; each step sends `ceil(fraction * n)` entries (at least one).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct TopKFraction(f64);

/// PowerSGD rank, 1..=256 (capped at the matrix dimensions for small spans).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PowerSgdRank(u32);

const INT8_BLOCK_MAX: u32 = 1 << 16;
const POWERSGD_RANK_MAX: u32 = 256;

fn invalid(name: &str, value: impl fmt::Display, reason: &'static str) -> ParseCodecKindError {
    ParseCodecKindError::InvalidParameter {
        name: name.to_owned(),
        value: value.to_string(),
        reason,
    }
}

impl Int8Block {
    /// The default block length, 64 floats.
    pub const DEFAULT: Self = Self(64);

    /// Validates a block length.
    pub fn new(block: u32) -> Result<Self, ParseCodecKindError> {
        if (1..=INT8_BLOCK_MAX).contains(&block) {
            Ok(Self(block))
        } else {
            Err(invalid("int8", block, "block length must be in 1..=65536"))
        }
    }

    /// Floats per block.
    #[must_use]
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl TopKFraction {
    /// Validates a fraction.
    pub fn new(fraction: f64) -> Result<Self, ParseCodecKindError> {
        if fraction > 0.0 && fraction <= 1.0 {
            Ok(Self(fraction))
        } else {
            Err(invalid("topk", fraction, "fraction must be in (0, 1]"))
        }
    }

    /// The fraction.
    #[must_use]
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PowerSgdRank {
    /// Validates a rank.
    pub fn new(rank: u32) -> Result<Self, ParseCodecKindError> {
        if (1..=POWERSGD_RANK_MAX).contains(&rank) {
            Ok(Self(rank))
        } else {
            Err(invalid("powersgd", rank, "rank must be in 1..=256"))
        }
    }

    /// The rank.
    #[must_use]
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl TryFrom<u32> for Int8Block {
    type Error = ParseCodecKindError;
    fn try_from(block: u32) -> Result<Self, Self::Error> {
        Self::new(block)
    }
}

impl From<Int8Block> for u32 {
    fn from(block: Int8Block) -> Self {
        block.0
    }
}

impl TryFrom<f64> for TopKFraction {
    type Error = ParseCodecKindError;
    fn try_from(fraction: f64) -> Result<Self, Self::Error> {
        Self::new(fraction)
    }
}

impl From<TopKFraction> for f64 {
    fn from(fraction: TopKFraction) -> Self {
        fraction.0
    }
}

impl TryFrom<u32> for PowerSgdRank {
    type Error = ParseCodecKindError;
    fn try_from(rank: u32) -> Result<Self, Self::Error> {
        Self::new(rank)
    }
}

impl From<PowerSgdRank> for u32 {
    fn from(rank: PowerSgdRank) -> Self {
        rank.0
    }
}

impl CodecKind {
    /// Exact number of bytes [`Codec::encode`] writes for a span of `span_len` floats. Wire
    /// formats carry no header, so this is also the only length [`CodecKind::decode`] accepts.
    #[must_use]
    pub fn encoded_len(self, span_len: usize) -> usize {
        match self {
            Self::None => span_len.saturating_mul(4),
            Self::Fp16 | Self::Bf16 => span_len.saturating_mul(2),
            Self::Int8 { block } => int8::encoded_len(block.get(), span_len),
            Self::TopK { fraction } => topk::encoded_len(fraction.get(), span_len),
            Self::PowerSgd { rank } => powersgd::Shape::new(span_len, rank.get()).encoded_len(),
        }
    }

    /// Raw f32 bytes divided by encoded bytes for a span of `span_len` floats (1.0 for an empty
    /// span). Below 1.0 when the codec's fixed costs dominate a tiny span.
    #[must_use]
    pub fn compression_ratio(self, span_len: usize) -> f64 {
        let encoded = self.encoded_len(span_len);
        if encoded == 0 {
            1.0
        } else {
            span_len as f64 * 4.0 / encoded as f64
        }
    }

    /// The documented error guarantee for one encode/decode of a span of `span_len` floats.
    #[must_use]
    pub fn error_bound(self, span_len: usize) -> ErrorBound {
        match self {
            Self::None => ErrorBound::Exact,
            // fp16: 11-bit significand, so RNE is within half an ulp = 2^-11 relative for normal
            // values; below 2^-14 values are subnormal with spacing 2^-24 (error <= 2^-25).
            Self::Fp16 => ErrorBound::PerElement {
                rel: 2f64.powi(-11),
                abs: 2f64.powi(-25),
            },
            // bf16: 8-bit significand and f32's exponent range; subnormal spacing is 2^-133.
            Self::Bf16 => ErrorBound::PerElement {
                rel: 2f64.powi(-8),
                abs: 2f64.powi(-134),
            },
            Self::Int8 { block } => ErrorBound::BlockAbsMax {
                block: block.get(),
                rel: int8::ERROR_REL_TO_ABSMAX,
                abs: f64::from(int8::FLUSH_BELOW),
            },
            Self::TopK { fraction } => ErrorBound::ErrorFeedback {
                contraction: topk::contraction(fraction.get(), span_len),
            },
            Self::PowerSgd { .. } => ErrorBound::ErrorFeedback { contraction: 1.0 },
        }
    }

    /// Whether instances keep state between steps (an error-feedback residual).
    #[must_use]
    pub fn is_stateful(self) -> bool {
        matches!(self, Self::TopK { .. } | Self::PowerSgd { .. })
    }

    /// Decodes `bytes` into `out`; `out.len()` is the span length, agreed out of band.
    ///
    /// Decoding is stateless and deterministic: the same bytes give bit-identical floats on every
    /// peer. It never allocates from a length read off the wire (formats carry no lengths), and
    /// every hostile input — wrong length, bad scale, bad index, NaN/Inf patterns, values whose
    /// product overflows — is an `Err`. On success every element of `out` is finite.
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
        check_span_len(out.len())?;
        let expected = self.encoded_len(out.len());
        if bytes.len() != expected {
            return Err(CodecError::EncodedLenMismatch {
                expected,
                actual: bytes.len(),
                span_len: out.len(),
            });
        }
        match self {
            Self::None => raw::decode(bytes, out),
            Self::Fp16 => float16::decode_fp16(bytes, out),
            Self::Bf16 => float16::decode_bf16(bytes, out),
            Self::Int8 { block } => int8::decode(block.get(), bytes, out),
            Self::TopK { .. } => topk::decode(bytes, out),
            Self::PowerSgd { rank } => {
                powersgd::decode(powersgd::Shape::new(out.len(), rank.get()), bytes, out)
            }
        }
    }

    /// Builds an encoder for spans of exactly `span_len` floats.
    ///
    /// `seed` drives the only randomness (PowerSGD's initial Q); other codecs ignore it. It is
    /// mandatory so that a run is reproducible from its configuration.
    pub fn build(self, span_len: usize, seed: u64) -> Result<Box<dyn Codec>, CodecError> {
        check_span_len(span_len)?;
        Ok(match self {
            Self::None => Box::new(raw::RawCodec::new(span_len)),
            Self::Fp16 => Box::new(float16::Fp16Codec::new(span_len)),
            Self::Bf16 => Box::new(float16::Bf16Codec::new(span_len)),
            Self::Int8 { block } => Box::new(int8::Int8Codec::new(block, span_len)),
            Self::TopK { fraction } => Box::new(topk::TopKCodec::new(fraction, span_len)),
            Self::PowerSgd { rank } => Box::new(powersgd::PowerSgdCodec::new(rank, span_len, seed)),
        })
    }
}

pub(super) fn check_span_len(len: usize) -> Result<(), CodecError> {
    if len > MAX_SPAN_LEN {
        return Err(CodecError::SpanTooLong {
            len,
            max: MAX_SPAN_LEN,
        });
    }
    Ok(())
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Fp16 => f.write_str("fp16"),
            Self::Bf16 => f.write_str("bf16"),
            Self::Int8 { block } => write!(f, "int8:{}", block.0),
            // f64's Display is the shortest text that parses back to the same value.
            Self::TopK { fraction } => write!(f, "topk:{}", fraction.0),
            Self::PowerSgd { rank } => write!(f, "powersgd:{}", rank.0),
        }
    }
}

impl FromStr for CodecKind {
    type Err = ParseCodecKindError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, param) = match text.split_once(':') {
            Some((name, param)) => (name, Some(param)),
            None => (text, None),
        };
        match (name, param) {
            ("none", None) => Ok(Self::None),
            ("fp16", None) => Ok(Self::Fp16),
            ("bf16", None) => Ok(Self::Bf16),
            ("none" | "fp16" | "bf16", Some(_)) => Err(ParseCodecKindError::UnexpectedParameter {
                name: name.to_owned(),
            }),
            ("int8", None) => Ok(Self::Int8 {
                block: Int8Block::DEFAULT,
            }),
            ("int8", Some(p)) => Ok(Self::Int8 {
                block: Int8Block::new(parse_num(name, p)?)?,
            }),
            ("topk", Some(p)) => Ok(Self::TopK {
                fraction: TopKFraction::new(parse_num(name, p)?)?,
            }),
            ("powersgd", Some(p)) => Ok(Self::PowerSgd {
                rank: PowerSgdRank::new(parse_num(name, p)?)?,
            }),
            ("topk", None) => Err(missing(name, "topk:0.01")),
            ("powersgd", None) => Err(missing(name, "powersgd:4")),
            _ => Err(ParseCodecKindError::UnknownCodec {
                name: name.to_owned(),
            }),
        }
    }
}

fn missing(name: &str, example: &'static str) -> ParseCodecKindError {
    ParseCodecKindError::MissingParameter {
        name: name.to_owned(),
        example,
    }
}

fn parse_num<T: FromStr>(name: &str, param: &str) -> Result<T, ParseCodecKindError> {
    param
        .parse()
        .map_err(|_| invalid(name, param, "not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_names_round_trip() {
        for name in [
            "none",
            "fp16",
            "bf16",
            "int8:64",
            "int8:256",
            "topk:0.01",
            "powersgd:4",
        ] {
            let kind: CodecKind = name.parse().unwrap();
            assert_eq!(kind.to_string(), name);
            let json = serde_json::to_string(&kind).unwrap();
            let back: CodecKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind, "{json}");
        }
        assert_eq!("int8".parse::<CodecKind>().unwrap().to_string(), "int8:64");
    }

    #[test]
    fn bad_names_are_typed_errors() {
        let cases = [
            ("gzip", "UnknownCodec"),
            ("topk", "MissingParameter"),
            ("powersgd", "MissingParameter"),
            ("fp16:2", "UnexpectedParameter"),
            ("topk:0", "InvalidParameter"),
            ("topk:1.5", "InvalidParameter"),
            ("topk:NaN", "InvalidParameter"),
            ("int8:0", "InvalidParameter"),
            ("int8:x", "InvalidParameter"),
            ("powersgd:0", "InvalidParameter"),
            ("powersgd:257", "InvalidParameter"),
        ];
        for (text, variant) in cases {
            let err = text.parse::<CodecKind>().unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{text}: {err:?}");
        }
    }

    #[test]
    fn deserialization_validates_parameters() {
        let bad = r#"{"topk":{"fraction":2.0}}"#;
        assert!(serde_json::from_str::<CodecKind>(bad).is_err());
        let bad = r#"{"int8":{"block":0}}"#;
        assert!(serde_json::from_str::<CodecKind>(bad).is_err());
    }

    #[test]
    fn encoded_lengths_and_ratios() {
        let n = 1 << 20;
        let kind = |s: &str| s.parse::<CodecKind>().unwrap();
        assert_eq!(kind("none").encoded_len(n), 4 * n);
        assert_eq!(kind("fp16").encoded_len(n), 2 * n);
        assert_eq!(kind("int8:64").encoded_len(n), n + 4 * n / 64);
        assert_eq!(kind("topk:0.01").encoded_len(n), 8 * n.div_ceil(100));
        assert_eq!(kind("powersgd:4").encoded_len(n), 4 * 4 * (1024 + 1024));
        assert!((kind("bf16").compression_ratio(n) - 2.0).abs() < 1e-12);
        assert!((kind("none").compression_ratio(0) - 1.0).abs() < 1e-12);
    }
}
