//! Chat templates: the Jinja template that an instruct model's
//! `tokenizer_config.json` (or a GGUF's `tokenizer.chat_template`, which the
//! GGUF import writes there) carries. A prompt rendered through it reaches
//! the model in the form the model was tuned on; a bare prompt does not.
//!
//! Rendering follows transformers' `apply_chat_template`: Jinja with
//! `trim_blocks` and `lstrip_blocks`, Python's string methods (minijinja's
//! `pycompat`), `raise_exception`, and the special tokens of the tokenizer's
//! own config (`bos_token`, `eos_token`, ...) as variables, so the template
//! and the tokens come from the base and nothing is assumed about them.
//!
//! A training example is the prompt rendered with the generation prompt,
//! followed by what the full exchange adds to it (the answer and the
//! template's end of turn). Rendering both and taking the difference keeps
//! the prompt's tokens exactly what inference feeds.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error as JinjaError, ErrorKind, context};
use serde_json::Value as Json;

use super::error::{ModelError, Result};

/// The file a chat template lives in, beside `tokenizer.json`.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// The special tokens a template may use, named as transformers names them.
const SPECIAL_TOKENS: [&str; 4] = ["bos_token", "eos_token", "unk_token", "pad_token"];

/// The template's name in the environment.
const NAME: &str = "chat";

/// A parsed chat template with the special tokens it renders with.
pub struct ChatTemplate {
    env: Environment<'static>,
    specials: Vec<(&'static str, String)>,
    path: PathBuf,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The template of a parsed `tokenizer_config.json`, if it has one. A
    /// list of named templates (transformers' multi-template form) gives
    /// the one named `default`.
    pub fn from_config(config: &Json, path: &Path) -> Result<Option<Self>> {
        let source = match &config["chat_template"] {
            Json::String(s) => s.clone(),
            Json::Array(named) => match named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
            {
                Some(s) => s.to_string(),
                None => return Err(invalid(path, "no template named `default`".into())),
            },
            Json::Null => return Ok(None),
            other => {
                return Err(invalid(
                    path,
                    format!("`chat_template` is {other}, not a string"),
                ));
            }
        };
        let specials = SPECIAL_TOKENS
            .iter()
            .filter_map(|&name| token_text(&config[name]).map(|text| (name, text)))
            .collect();
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| invalid(path, e.to_string()))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(NAME, source)
            .map_err(|e| invalid(path, e.to_string()))?;
        Ok(Some(ChatTemplate {
            env,
            specials,
            path: path.to_path_buf(),
        }))
    }

    /// The prompt as one user turn, ending with the generation prompt (the
    /// opening of the assistant's turn).
    pub fn prompt(&self, user: &str) -> Result<String> {
        self.render(&[("user", user)], true)
    }

    /// What a complete exchange adds after [`ChatTemplate::prompt`]: the
    /// answer and the template's end of turn.
    pub fn answer(&self, user: &str, assistant: &str) -> Result<String> {
        let prompt = self.prompt(user)?;
        let full = self.render(&[("user", user), ("assistant", assistant)], false)?;
        match full.strip_prefix(&prompt) {
            Some(rest) => Ok(rest.to_string()),
            None => Err(invalid(
                &self.path,
                "the rendered exchange does not start with the rendered prompt, so the answer \
                 cannot be told apart from it"
                    .into(),
            )),
        }
    }

    fn render(&self, turns: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<_> = turns
            .iter()
            .map(|&(role, content)| context! { role => role, content => content })
            .collect();
        let mut vars: std::collections::BTreeMap<&str, minijinja::Value> = self
            .specials
            .iter()
            .map(|(name, text)| (*name, minijinja::Value::from(text.as_str())))
            .collect();
        vars.insert("messages", minijinja::Value::from(messages));
        vars.insert(
            "add_generation_prompt",
            minijinja::Value::from(add_generation_prompt),
        );
        self.env
            .get_template(NAME)
            .and_then(|t| t.render(&vars))
            .map_err(|e| invalid(&self.path, e.to_string()))
    }
}

/// A special token's text: a plain string, or transformers' `AddedToken`
/// object with its `content`.
fn token_text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

fn invalid(path: &Path, reason: String) -> ModelError {
    ModelError::ChatTemplate {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The ChatML form of SmolLM2-Instruct's template, with its default
    /// system turn.
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn template(config: Json) -> ChatTemplate {
        ChatTemplate::from_config(&config, Path::new("tokenizer_config.json"))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn renders_a_prompt_and_its_answer() {
        let t = template(json!({"chat_template": CHATML}));
        let prompt = t.prompt("Fold or call?").unwrap();
        assert!(
            prompt.ends_with("<|im_start|>user\nFold or call?<|im_end|>\n<|im_start|>assistant\n")
        );
        assert_eq!(
            t.answer("Fold or call?", "call").unwrap(),
            "call<|im_end|>\n"
        );
    }

    #[test]
    fn special_tokens_come_from_the_config() {
        let t = template(json!({
            "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.content | trim }}]{{ eos_token }}{% endfor %}",
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>",
        }));
        assert_eq!(t.render(&[("user", " hi ")], false).unwrap(), "<s>[hi]</s>");
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let t = template(json!({
            "chat_template": "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}{{ messages[0].content.strip().upper() }}",
        }));
        assert_eq!(t.prompt("  fold ").unwrap(), "FOLD");
        let err = t.render(&[("assistant", "x")], false).unwrap_err();
        assert!(err.to_string().contains("user first"), "{err}");
    }

    /// Templates written for the test, rendered by jinja2 the way
    /// transformers renders them (tests/golden/chat/make_chat_golden.py):
    /// the same text here, byte for byte.
    #[test]
    fn renders_what_jinja2_renders() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/chat");
        let read = |name: &str| -> Json {
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
        };
        let (specs, rendered) = (read("templates.json"), read("rendered.json"));
        let specs = specs.as_object().unwrap();
        assert!(specs.len() >= 3);
        for (name, spec) in specs {
            let t = template(spec.clone());
            for case in rendered[name].as_array().unwrap() {
                let (user, assistant) = (
                    case["user"].as_str().unwrap(),
                    case["assistant"].as_str().unwrap(),
                );
                let (prompt, exchange) = (
                    case["prompt"].as_str().unwrap(),
                    case["exchange"].as_str().unwrap(),
                );
                assert_eq!(t.prompt(user).unwrap(), prompt, "{name}");
                let full = t
                    .render(&[("user", user), ("assistant", assistant)], false)
                    .unwrap();
                assert_eq!(full, exchange, "{name}");
                match exchange.strip_prefix(prompt) {
                    Some(rest) => assert_eq!(t.answer(user, assistant).unwrap(), rest, "{name}"),
                    None => assert!(t.answer(user, assistant).is_err(), "{name}"),
                }
            }
        }
    }

    #[test]
    fn no_template_is_none_and_a_bad_one_is_an_error() {
        let none =
            ChatTemplate::from_config(&json!({"eos_token": "</s>"}), Path::new("t")).unwrap();
        assert!(none.is_none());
        let bad = ChatTemplate::from_config(&json!({"chat_template": "{% for %}"}), Path::new("t"));
        assert!(matches!(bad, Err(ModelError::ChatTemplate { .. })));
        let named = template(json!({"chat_template": [
            {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}));
        assert_eq!(named.prompt("x").unwrap(), "D");
    }
}
