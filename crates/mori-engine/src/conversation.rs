//! A multi-turn chat: messages rendered through a chat template, answered by a
//! session whose cache keeps the conversation between turns.

use std::ops::ControlFlow;

use mori_model::Tokenizer;
use serde::Serialize;

use crate::chat::{ChatTemplate, RenderOptions, SpecialTokens, TemplateError};
use crate::generate::{Completion, GenerateError, GenerateOptions, Piece};
use crate::sampling::Sampler;
use crate::Session;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Why a turn could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("the conversation is {n_prompt} tokens long but the context holds {n_ctx}; clear it or use a larger context")]
    ContextFull { n_prompt: usize, n_ctx: usize },
}

/// Tokenizes text a chat template rendered: special tokens in it are parsed as
/// such, and BOS is added when the vocabulary asks for it unless the template
/// already wrote it.
pub fn tokenize_rendered(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let bos_written = tok
        .bos()
        .map(|b| tok.decode(&[b], true))
        .is_some_and(|b| !b.is_empty() && text.starts_with(&b));
    tok.encode(text, !bos_written, true)
}

/// A conversation with a model.
pub struct Conversation<'m> {
    session: Session<'m>,
    template: ChatTemplate,
    special: SpecialTokens,
    system: Option<String>,
    messages: Vec<Message>,
    /// Extra template variables and the clock, passed to every render.
    pub render_options: RenderOptions,
}

impl<'m> Conversation<'m> {
    pub fn new(session: Session<'m>, template: ChatTemplate) -> Self {
        let special = SpecialTokens::from_tokenizer(&session.model().tokenizer);
        Conversation {
            session,
            template,
            special,
            system: None,
            messages: Vec::new(),
            render_options: RenderOptions::default(),
        }
    }

    /// Sets (or with `None` removes) the system message; it applies from the next turn.
    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system.filter(|s| !s.is_empty());
    }

    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// Forgets the turns so far (the system message stays).
    pub fn clear(&mut self) {
        self.messages.clear();
    }

    /// Appends a turn without generating (to restore a saved conversation).
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// The user and assistant turns so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn session(&self) -> &Session<'m> {
        &self.session
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The full message list, system message first.
    fn all_messages(&self) -> Vec<Message> {
        let mut all = Vec::with_capacity(self.messages.len() + 1);
        if let Some(s) = &self.system {
            all.push(Message::new("system", s.clone()));
        }
        all.extend(self.messages.iter().cloned());
        all
    }

    /// The prompt text for the conversation so far, ending where the model should answer.
    pub fn render_prompt(&self) -> Result<String, TemplateError> {
        let opts = RenderOptions {
            add_generation_prompt: true,
            ..self.render_options.clone()
        };
        self.template
            .render(&self.all_messages(), &self.special, &opts)
    }

    /// Adds the user's message and streams the model's answer to `on_piece`. Only
    /// the part of the rendered conversation that the cache does not hold yet is
    /// read. The answer joins the history even when cut short, so history and
    /// cache stay in step.
    pub fn reply(
        &mut self,
        user: &str,
        sampler: &mut Sampler,
        opts: &GenerateOptions,
        on_piece: impl FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> Result<Completion, ChatError> {
        self.messages.push(Message::new("user", user));
        let result = self.answer(sampler, opts, on_piece);
        match &result {
            Ok(done) => self
                .messages
                .push(Message::new("assistant", done.text.clone())),
            Err(_) => {
                self.messages.pop();
            }
        }
        result
    }

    fn answer(
        &mut self,
        sampler: &mut Sampler,
        opts: &GenerateOptions,
        on_piece: impl FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> Result<Completion, ChatError> {
        let text = self.render_prompt()?;
        let tokens = tokenize_rendered(&self.session.model().tokenizer, &text);
        let n_ctx = self.session.n_ctx();
        if tokens.len() > n_ctx {
            return Err(ChatError::ContextFull {
                n_prompt: tokens.len(),
                n_ctx,
            });
        }
        let rest = self.session.reuse_prefix(&tokens).to_vec();
        Ok(self.session.generate(&rest, sampler, opts, on_piece)?)
    }
}
