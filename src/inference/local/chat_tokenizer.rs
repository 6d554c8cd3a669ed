//! SmolLM2's tokenizer, built from its GGUF metadata: the GGUF holds no
//! `tokenizer.json`, only `tokenizer.ggml.*` (a GPT-2 byte-level BPE: tokens,
//! merges, token types, BOS/EOS ids) and the chat template.
//!
//! Encoding goes through a `tokenizers` BPE with the `smollm` pre-tokenizer
//! (every digit on its own, then GPT-2's split) and never turns text into a
//! control token: the prompt's `<|im_start|>`/`<|im_end|>` are inserted as ids,
//! so a message that contains them as text cannot forge a turn. Decoding maps
//! each token to its bytes directly (GPT-2's byte-to-character table reversed),
//! so a streamed answer is decoded a token at a time without decoding it whole.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::inference::backend::{ChatMessage, Role};

/// SmolLM2-Instruct's chat template (ChatML), as its GGUF states it; [`ChatTokenizer::prompt`]
/// renders exactly this.
pub(super) const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The system message the template adds when a conversation does not start with one.
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// GGUF token type of a control token (`<|im_start|>`, `<|endoftext|>`, ...).
const CONTROL: i32 = 3;

/// Pre-tokenizers (`tokenizer.ggml.pre`) whose split is "each digit alone, then GPT-2's regex".
const DIGITS_THEN_GPT2: [&str; 3] = ["smollm", "starcoder", "refact"];

/// The chat model's tokenizer.
pub(super) struct ChatTokenizer {
    tokenizer: Tokenizer,
    /// Each token's bytes; empty for control tokens, which are never shown.
    bytes: Vec<Vec<u8>>,
    im_start: u32,
    im_end: u32,
    /// Tokens that end the answer: `<|im_end|>`, the GGUF's EOS, `<|endoftext|>`.
    stops: Vec<u32>,
    /// Whether the GGUF's own chat template is the one rendered here.
    pub(super) template_matches: bool,
}

impl ChatTokenizer {
    /// Builds the tokenizer from a GGUF's metadata.
    pub(super) fn from_gguf(metadata: &HashMap<String, Value>) -> Result<Self, String> {
        let get = |key: &str| metadata.get(key).ok_or_else(|| format!("no {key} in the GGUF metadata"));
        let model = get("tokenizer.ggml.model")?.to_string().map_err(|e| e.to_string())?;
        if model != "gpt2" {
            return Err(format!(
                "tokenizer.ggml.model is {model:?}; only the byte-level BPE \"gpt2\" is supported"
            ));
        }
        let pre = get("tokenizer.ggml.pre")?.to_string().map_err(|e| e.to_string())?;
        if !DIGITS_THEN_GPT2.contains(&pre.as_str()) {
            return Err(format!("tokenizer.ggml.pre is {pre:?}; supported: {}", DIGITS_THEN_GPT2.join(", ")));
        }
        let tokens = strings(get("tokenizer.ggml.tokens")?)?;
        let merges = strings(get("tokenizer.ggml.merges")?)?;
        let types = match metadata.get("tokenizer.ggml.token_type") {
            Some(value) => value
                .to_vec()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|v| v.to_i32().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let id = |key: &str| -> Result<Option<u32>, String> {
            metadata.get(key).map(|v| v.to_u32().map_err(|e| e.to_string())).transpose()
        };
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let find = |text: &str| tokens.iter().position(|t| t == text).and_then(|i| u32::try_from(i).ok());
        let (Some(im_start), Some(im_end)) = (find("<|im_start|>"), find("<|im_end|>")) else {
            return Err("the vocabulary has no <|im_start|>/<|im_end|>: not a ChatML model".to_owned());
        };

        let vocab: Vocab = tokens.iter().zip(0u32..).map(|(t, i)| (t.clone(), i)).collect();
        let merges: Merges = merges
            .iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect::<Option<_>>()
            .ok_or("a merge in tokenizer.ggml.merges is not two tokens")?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| e.to_string())?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevel::default()));

        let is_control = |i: usize| {
            types.get(i) == Some(&CONTROL)
                || u32::try_from(i)
                    .is_ok_and(|i| Some(i) == eos || Some(i) == bos || i == im_start || i == im_end)
        };
        let control: Vec<AddedToken> = (0..tokens.len())
            .filter(|&i| is_control(i))
            .map(|i| AddedToken::from(tokens[i].clone(), true))
            .collect();
        tokenizer.add_special_tokens(control).map_err(|e| e.to_string())?;
        // text is text: "<|im_end|>" inside a message is not the control token
        tokenizer.set_encode_special_tokens(true);

        let chars = byte_of_char();
        let bytes = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                if is_control(i) {
                    Vec::new()
                } else {
                    let mut out = Vec::with_capacity(token.len());
                    for c in token.chars() {
                        match chars.get(&c) {
                            Some(&b) => out.push(b),
                            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                    out
                }
            })
            .collect();
        let mut stops = vec![im_end];
        stops.extend(eos);
        stops.extend(find("<|endoftext|>"));
        stops.sort_unstable();
        stops.dedup();
        let template_matches = match metadata.get("tokenizer.chat_template") {
            Some(value) => value.to_string().is_ok_and(|t| t == CHAT_TEMPLATE),
            None => true,
        };
        Ok(Self { tokenizer, bytes, im_start, im_end, stops, template_matches })
    }

    /// Token ids of `text`, as text (no control tokens).
    pub(super) fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self.tokenizer.encode(text, false).map_err(|e| e.to_string())?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The prompt for `messages` in the chat template, ending with the assistant's turn.
    pub(super) fn prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
        let mut ids = Vec::new();
        let mut turn = |role: &str, content: &str| -> Result<(), String> {
            ids.push(self.im_start);
            ids.extend(self.encode(&format!("{role}\n{content}"))?);
            ids.push(self.im_end);
            ids.extend(self.encode("\n")?);
            Ok(())
        };
        if messages.first().is_none_or(|m| m.role != Role::System) {
            turn(Role::System.as_str(), DEFAULT_SYSTEM)?;
        }
        for message in messages {
            turn(message.role.as_str(), &message.content)?;
        }
        ids.push(self.im_start);
        ids.extend(self.encode("assistant\n")?);
        Ok(ids)
    }

    /// The bytes a token stands for (none for a control token).
    pub(super) fn bytes(&self, id: u32) -> &[u8] {
        usize::try_from(id).ok().and_then(|i| self.bytes.get(i)).map_or(&[], Vec::as_slice)
    }

    /// Whether the token ends the answer.
    pub(super) fn is_stop(&self, id: u32) -> bool {
        self.stops.contains(&id)
    }

    /// The text of `ids` (control tokens left out, bad UTF-8 replaced).
    #[cfg(test)]
    pub(super) fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.bytes(id).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The `tokenizers` tokenizer itself.
    #[cfg(test)]
    pub(super) fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

fn strings(value: &Value) -> Result<Vec<String>, String> {
    value
        .to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
        .collect()
}

/// GPT-2's byte-level alphabet reversed: the character standing for each byte.
/// Printable bytes stand for themselves; the others (controls, space, DEL, NBSP,
/// soft hyphen) for U+0100 onwards, in byte order.
fn byte_of_char() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    let mut map = HashMap::with_capacity(256);
    for b in 0..=u8::MAX {
        let code = if printable(b) {
            u32::from(b)
        } else {
            next += 1;
            next - 1
        };
        if let Some(c) = char::from_u32(code) {
            map.insert(c, b);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_alphabet_covers_every_byte_once() {
        let map = byte_of_char();
        assert_eq!(map.len(), 256);
        let mut bytes: Vec<u8> = map.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        // GPT-2's: 'Ġ' is the space, 'Ċ' the newline, 'A' itself
        assert_eq!((map[&'Ġ'], map[&'Ċ'], map[&'A']), (b' ', b'\n', b'A'));
    }
}
