//! A SentencePiece `tokenizer.model` (the `ModelProto` protobuf of
//! google/sentencepiece's `sentencepiece_model.proto`, proto2): only the
//! fields conversion reads or the random checkpoints write, declared by hand
//! for `prost` (unknown fields are skipped when decoding).

use prost::Message;

/// `ModelProto`: the pieces and the trainer's and normalizer's settings.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<Piece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

/// `ModelProto.SentencePiece`.
#[derive(Clone, PartialEq, Message)]
pub struct Piece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    #[prost(enumeration = "PieceType", optional, tag = "3", default = "Normal")]
    pub r#type: Option<i32>,
}

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Byte = 6,
    Unused = 5,
}

/// `TrainerSpec`, the fields that say how to read the pieces.
#[derive(Clone, PartialEq, Message)]
pub struct TrainerSpec {
    #[prost(enumeration = "ModelType", optional, tag = "3", default = "Unigram")]
    pub model_type: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub vocab_size: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
    #[prost(int32, optional, tag = "43")]
    pub pad_id: Option<i32>,
}

/// `TrainerSpec.ModelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ModelType {
    Unigram = 1,
    Bpe = 2,
    Word = 3,
    Char = 4,
}

/// `NormalizerSpec`.
#[derive(Clone, PartialEq, Message)]
pub struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3", default = "true")]
    pub add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4", default = "true")]
    pub remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5", default = "true")]
    pub escape_whitespaces: Option<bool>,
}

/// A piece as conversion uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpPiece {
    pub text: String,
    pub score: f32,
    pub ty: PieceType,
}

/// A decoded `tokenizer.model` of scored pieces, which llama.cpp's `llama`
/// tokenizer runs by merging adjacent pieces by score: a BPE model's own rule
/// (so its encodings are SentencePiece's), and for a Unigram model the
/// approximation llama.cpp makes too.
#[derive(Debug, Clone)]
pub struct SpModel {
    pub pieces: Vec<SpPiece>,
    pub model_type: ModelType,
    pub byte_fallback: bool,
}

impl SpModel {
    /// Decodes `bytes`; `Err` says what is wrong in words.
    pub fn decode(bytes: &[u8]) -> Result<SpModel, String> {
        let m = ModelProto::decode(bytes)
            .map_err(|e| format!("not a SentencePiece model protobuf ({e})"))?;
        let trainer = m.trainer_spec.clone().unwrap_or_default();
        let raw = trainer.model_type.unwrap_or(ModelType::Unigram as i32);
        let model_type =
            ModelType::try_from(raw).map_err(|_| format!("unknown model_type {raw}"))?;
        if !matches!(model_type, ModelType::Bpe | ModelType::Unigram) {
            return Err(format!(
                "model_type {model_type:?}: only BPE and Unigram SentencePiece models \
                 convert (their scored pieces are what llama.cpp's 'llama' tokenizer merges)"
            ));
        }
        if m.pieces.is_empty() {
            return Err("the model has no pieces".into());
        }
        let mut pieces = Vec::with_capacity(m.pieces.len());
        for (id, p) in m.pieces.iter().enumerate() {
            let raw = p.r#type.unwrap_or(PieceType::Normal as i32);
            let ty = PieceType::try_from(raw)
                .map_err(|_| format!("piece {id} has unknown type {raw}"))?;
            let text = p.piece().to_string();
            if text.is_empty() {
                return Err(format!("piece {id} is empty"));
            }
            pieces.push(SpPiece {
                text,
                score: p.score(),
                ty,
            });
        }
        if pieces.iter().filter(|p| p.ty == PieceType::Unknown).count() != 1 {
            return Err("the model must define exactly one unknown piece".into());
        }
        Ok(SpModel {
            pieces,
            model_type,
            byte_fallback: trainer.byte_fallback(),
        })
    }
}

/// The special pieces and normalizer flag of a written `tokenizer.model`.
#[derive(Debug, Clone, Copy)]
pub struct SpmLayout<'a> {
    pub bos: &'a str,
    pub eos: &'a str,
    /// The padding piece, if the model names one.
    pub pad: Option<&'a str>,
    /// Whether SentencePiece puts a space in front of the text (Llama, ERNIE:
    /// yes; Gemma: no).
    pub add_dummy_prefix: bool,
}

/// Llama's layout: `<s>`, `</s>`, no padding piece, a dummy prefix.
pub const LLAMA_LAYOUT: SpmLayout<'static> = SpmLayout {
    bos: "<s>",
    eos: "</s>",
    pad: None,
    add_dummy_prefix: true,
};

/// Encodes a BPE model of `pieces` (text, score, type) with byte fallback and
/// Llama's normalizer settings (no rule table, a dummy prefix, whitespace kept
/// as written): the `tokenizer.model` of Mori's random checkpoints.
pub fn encode_bpe_model(pieces: &[(String, f32, PieceType)]) -> Vec<u8> {
    encode_bpe_model_as(pieces, LLAMA_LAYOUT)
}

/// [`encode_bpe_model`] with the special pieces and dummy prefix of `layout`.
pub fn encode_bpe_model_as(pieces: &[(String, f32, PieceType)], layout: SpmLayout) -> Vec<u8> {
    let id_of = |ty: PieceType, text: &str| {
        pieces
            .iter()
            .position(|p| p.2 == ty && p.0 == text)
            .map_or(-1, |i| i as i32)
    };
    let m = ModelProto {
        pieces: pieces
            .iter()
            .map(|(text, score, ty)| Piece {
                piece: Some(text.clone()),
                score: Some(*score),
                r#type: Some(*ty as i32),
            })
            .collect(),
        trainer_spec: Some(TrainerSpec {
            model_type: Some(ModelType::Bpe as i32),
            vocab_size: Some(pieces.len() as i32),
            byte_fallback: Some(true),
            unk_id: Some(id_of(PieceType::Unknown, "<unk>")),
            bos_id: Some(id_of(PieceType::Control, layout.bos)),
            eos_id: Some(id_of(PieceType::Control, layout.eos)),
            pad_id: Some(layout.pad.map_or(-1, |p| id_of(PieceType::Control, p))),
        }),
        normalizer_spec: Some(NormalizerSpec {
            name: Some("identity".into()),
            precompiled_charsmap: Some(Vec::new()),
            add_dummy_prefix: Some(layout.add_dummy_prefix),
            remove_extra_whitespaces: Some(false),
            escape_whitespaces: Some(true),
        }),
    };
    m.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let pieces = vec![
            ("<unk>".to_string(), 0.0, PieceType::Unknown),
            ("<s>".to_string(), 0.0, PieceType::Control),
            ("\u{2581}a".to_string(), -1.5, PieceType::Normal),
        ];
        let bytes = encode_bpe_model(&pieces);
        let m = SpModel::decode(&bytes).unwrap();
        assert_eq!(m.pieces.len(), 3);
        assert_eq!(m.pieces[2].text, "\u{2581}a");
        assert_eq!(m.pieces[2].score, -1.5);
        assert_eq!(m.pieces[1].ty, PieceType::Control);
        assert!(m.byte_fallback);

        assert_eq!(m.model_type, ModelType::Bpe);

        // A word-level model is named as unsupported; Unigram reads.
        let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
        proto.trainer_spec.as_mut().unwrap().model_type = Some(ModelType::Word as i32);
        let err = SpModel::decode(&proto.encode_to_vec()).unwrap_err();
        assert!(
            err.contains("Word") && err.contains("only BPE and Unigram"),
            "{err}"
        );
        proto.trainer_spec.as_mut().unwrap().model_type = Some(ModelType::Unigram as i32);
        let m = SpModel::decode(&proto.encode_to_vec()).unwrap();
        assert_eq!(m.model_type, ModelType::Unigram);
        // Garbage is not a model.
        assert!(SpModel::decode(b"\xff\xff\xff\xff").is_err());
        // No unknown piece.
        let err = SpModel::decode(&encode_bpe_model(&pieces[1..])).unwrap_err();
        assert!(err.contains("unknown piece"), "{err}");
    }
}
