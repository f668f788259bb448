//! Generation on a random-weight model: the same seed gives the same tokens
//! with any thread count, the stop rules end the answer where they should,
//! multi-turn generation continues the cache, and scoring agrees with the
//! log-probabilities reported while generating.

use std::ops::ControlFlow;

use mori_engine::generate::{FinishReason, GenerateOptions};
use mori_engine::sampling::{Sampler, SamplingParams};
use mori_engine::Session;
use mori_kernels::GgmlType;
use mori_model::random::{write_random_model, FileType, RandomSpec};
use mori_model::Model;

fn model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_random_model(
        &RandomSpec::tiny("llama", FileType::Uniform(GgmlType::Q8_0)),
        &path,
    )
    .unwrap();
    let m = Model::load(&path).unwrap();
    (dir, m)
}

fn sampled(
    m: &Model,
    threads: usize,
    seed: u64,
    opts: &GenerateOptions,
) -> (Vec<u32>, String, FinishReason) {
    let mut s = Session::new(m, 256, threads);
    let params = SamplingParams {
        seed,
        temperature: 1.0,
        ..Default::default()
    };
    let mut sampler = Sampler::new(params, m.hparams.n_vocab).unwrap();
    let mut streamed = String::new();
    let c = s
        .generate(&[1, 20, 30, 40], &mut sampler, opts, |p| {
            streamed.push_str(p.text);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(streamed, c.text, "the stream adds up to the text");
    (c.tokens, c.text, c.finish)
}

#[test]
fn same_seed_same_tokens_with_one_and_two_threads() {
    let (_d, m) = model();
    let opts = GenerateOptions {
        max_tokens: Some(24),
        ..Default::default()
    };
    let a = sampled(&m, 1, 42, &opts);
    assert_eq!(a.0.len(), 24);
    assert_eq!(a.2, FinishReason::Length);
    assert_eq!(a, sampled(&m, 2, 42, &opts), "1 vs 2 threads");
    assert_eq!(a, sampled(&m, 1, 42, &opts), "run twice");
    assert_ne!(a.0, sampled(&m, 1, 43, &opts).0, "another seed");
}

#[test]
fn stop_token_and_stop_text_end_the_answer() {
    let (_d, m) = model();
    let free = GenerateOptions {
        max_tokens: Some(24),
        ..Default::default()
    };
    let (tokens, text, _) = sampled(&m, 1, 5, &free);
    // Stopping at the 6th token's id ends the answer right before it.
    let stop_tok = tokens[5];
    let first = tokens.iter().position(|&t| t == stop_tok).unwrap();
    let opts = GenerateOptions {
        stop_tokens: vec![stop_tok],
        ..free.clone()
    };
    let (t2, _, finish) = sampled(&m, 1, 5, &opts);
    assert_eq!(finish, FinishReason::Stop);
    assert_eq!(t2, tokens[..first]);
    // A stop string taken from the middle of the text cuts it there.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 8, "random text long enough: {text:?}");
    let stop: String = chars[4..7].iter().collect();
    let cut = text.find(&stop).unwrap();
    let opts = GenerateOptions {
        stop: vec![stop.clone()],
        ..free
    };
    let (_, t3, finish) = sampled(&m, 1, 5, &opts);
    assert_eq!(finish, FinishReason::Stop);
    assert_eq!(t3, text[..cut], "cut before {stop:?}");
}

#[test]
fn callback_can_cancel_and_context_limit_is_reported() {
    let (_d, m) = model();
    let mut s = Session::new(&m, 16, 1);
    let mut sampler = Sampler::new(SamplingParams::greedy(), m.hparams.n_vocab).unwrap();
    let mut n = 0;
    let c = s
        .generate(
            &[1, 2, 3],
            &mut sampler,
            &GenerateOptions::default(),
            |_| {
                n += 1;
                if n == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
    assert_eq!((c.finish, c.tokens.len()), (FinishReason::Cancelled, 3));
    // 3 prompt + 2 fed (the cancelled third was not) = 5; the rest fills the 16.
    let c = s
        .generate(&[], &mut sampler, &GenerateOptions::default(), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(c.finish, FinishReason::ContextFull);
    assert_eq!(s.n_past(), 16);
    // A prompt that does not fit is an error that names the sizes.
    let e = s
        .generate(&[5; 4], &mut sampler, &GenerateOptions::default(), |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("16"), "{e}");
}

#[test]
fn score_matches_generation_logprobs_and_turns_continue_the_cache() {
    let (_d, m) = model();
    let prompt = [1u32, 7, 8, 9];
    let opts = GenerateOptions {
        max_tokens: Some(6),
        logprobs: Some(3),
        ..Default::default()
    };
    let mut s = Session::new(&m, 64, 1);
    let mut sampler = Sampler::new(SamplingParams::greedy(), m.hparams.n_vocab).unwrap();
    let mut lps = Vec::new();
    let c = s
        .generate(&prompt, &mut sampler, &opts, |p| {
            lps.push(p.logprob.clone().unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(lps.len(), 6);
    for lp in &lps {
        assert_eq!(lp.top.len(), 3);
        // Greedy picks the most likely token.
        assert_eq!(lp.top[0].0, lp.id);
    }
    // Scoring prompt + answer from scratch gives the same log-probabilities.
    let mut fresh = Session::new(&m, 64, 2);
    let all: Vec<u32> = prompt.iter().chain(&c.tokens).copied().collect();
    let scored = fresh.score(&all, 3).unwrap();
    assert!(scored[0].is_none());
    for (i, lp) in lps.iter().enumerate() {
        let s = scored[prompt.len() + i].as_ref().unwrap();
        assert_eq!(s.id, lp.id);
        assert!(
            (s.logprob - lp.logprob).abs() < 1e-5,
            "{} vs {}",
            s.logprob,
            lp.logprob
        );
    }
    // A second turn continues after the first one's text.
    assert_eq!(s.n_past(), prompt.len() + c.tokens.len());
    let c2 = s
        .generate(&[9, 9], &mut sampler, &opts, |_| ControlFlow::Continue(()))
        .unwrap();
    let mut again = Session::new(&m, 64, 1);
    let whole: Vec<u32> = all.iter().chain(&[9, 9]).copied().collect();
    let mut greedy = Sampler::new(SamplingParams::greedy(), m.hparams.n_vocab).unwrap();
    let c3 = again
        .generate(&whole, &mut greedy, &opts, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(
        c2.tokens, c3.tokens,
        "continuing the cache = re-reading everything"
    );
}

#[test]
fn conversation_reads_only_the_new_part_of_each_turn_and_answers_as_a_fresh_one() {
    use mori_engine::chat::{ChatTemplate, RenderOptions, SpecialTokens};
    use mori_engine::conversation::{tokenize_rendered, ChatError, Conversation, Message};

    let (_d, m) = model();
    let opts = GenerateOptions {
        max_tokens: Some(8),
        ..Default::default()
    };
    let greedy = || Sampler::new(SamplingParams::greedy(), m.hparams.n_vocab).unwrap();
    let mut chat = Conversation::new(
        Session::new(&m, 512, 2),
        ChatTemplate::builtin("chatml").unwrap(),
    );
    chat.set_system(Some("Be brief.".into()));
    let first = chat
        .reply("Hello there", &mut greedy(), &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    let cached_after_first = chat.session().tokens().to_vec();
    let second = chat
        .reply("Tell me more", &mut greedy(), &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(chat.messages().len(), 4);
    assert_eq!(
        chat.messages()[1],
        Message::new("assistant", first.text.clone())
    );

    // The prompt of turn two, rendered from scratch.
    let history = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hello there"),
        Message::new("assistant", first.text.clone()),
        Message::new("user", "Tell me more"),
    ];
    let render = RenderOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let text = ChatTemplate::builtin("chatml")
        .unwrap()
        .render(
            &history,
            &SpecialTokens::from_tokenizer(&m.tokenizer),
            &render,
        )
        .unwrap();
    let p2 = tokenize_rendered(&m.tokenizer, &text);
    let shared = cached_after_first
        .iter()
        .zip(&p2)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        shared > 20,
        "turn one's prompt is a prefix of turn two's ({shared} tokens shared)"
    );
    assert_eq!(
        second.n_prompt,
        p2.len() - shared,
        "turn two reads only what the cache lacks"
    );

    // A fresh conversation given the same history reads it all and answers the same way.
    let mut fresh = Conversation::new(
        Session::new(&m, 512, 1),
        ChatTemplate::builtin("chatml").unwrap(),
    );
    fresh.set_system(Some("Be brief.".into()));
    fresh.push(Message::new("user", "Hello there"));
    fresh.push(Message::new("assistant", first.text.clone()));
    let again = fresh
        .reply("Tell me more", &mut greedy(), &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(again.n_prompt, p2.len());
    assert_eq!(again.text, second.text);

    // A turn that cannot fit is refused with the sizes, and leaves the history as it was.
    let mut small = Conversation::new(
        Session::new(&m, 24, 1),
        ChatTemplate::builtin("chatml").unwrap(),
    );
    let long = "word ".repeat(40);
    match small.reply(&long, &mut greedy(), &opts, |_| ControlFlow::Continue(())) {
        Err(e @ ChatError::ContextFull { n_ctx: 24, .. }) => {
            assert!(e.to_string().contains("context holds 24"), "{e}")
        }
        other => panic!("expected ContextFull, got {other:?}"),
    }
    assert!(small.messages().is_empty());
}

/// A session over Gemma 3, whose windowed layers keep a ring of 4 + 255 rows:
/// a prompt that shares a prefix with 300 cached tokens keeps that prefix while
/// the ring still holds the window before it, and otherwise starts over, so
/// `tokens()` always equals what the cache holds and the logits are a fresh
/// session's.
#[test]
fn session_rewinds_a_sliding_window_only_as_far_as_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.gguf");
    let mut spec = RandomSpec::tiny("gemma3", FileType::Uniform(GgmlType::Q8_0));
    spec.sliding_window = 4;
    write_random_model(&spec, &path).unwrap();
    let m = Model::load(&path).unwrap();
    let text: Vec<u32> = (0..300).map(|i| 3 + (i * 53) % 370).collect();
    let fresh = |prompt: &[u32]| {
        let mut s = Session::new(&m, 320, 2);
        s.feed(prompt).unwrap().to_vec()
    };
    for (keep, expect_kept) in [(296, 296), (20, 0)] {
        let mut s = Session::new(&m, 320, 2);
        s.feed(&text).unwrap();
        let mut prompt = text[..keep].to_vec();
        prompt.extend([7, 8, 9]);
        let rest = s.reuse_prefix(&prompt).to_vec();
        assert_eq!(s.tokens().len(), expect_kept);
        assert_eq!(s.n_past(), expect_kept);
        assert_eq!(rest, prompt[expect_kept..]);
        assert_eq!(s.feed(&rest).unwrap(), &fresh(&prompt)[..]);
    }
}

#[test]
fn a_refused_feed_leaves_the_session_as_it_was() {
    let (_d, m) = model();
    let n_vocab = m.hparams.n_vocab as u32;
    let mut s = Session::new(&m, 16, 2);
    let before = s.feed(&[3, 4, 5]).unwrap().to_vec();
    // A token outside the vocabulary, a prompt over the context, nothing.
    assert!(s.feed(&[6, n_vocab]).is_err());
    assert!(s.feed(&[7; 14]).is_err());
    assert!(s.feed_all(&[7; 14]).is_err());
    assert!(s.feed(&[]).is_err());
    assert_eq!(s.tokens(), [3, 4, 5]);
    assert_eq!(s.n_past(), 3);
    // Generation continues from the same logits, as a fresh session's.
    let mut fresh = Session::new(&m, 16, 2);
    fresh.feed(&[3, 4, 5]).unwrap();
    assert_eq!(
        s.generate_greedy(4).unwrap(),
        fresh.generate_greedy(4).unwrap()
    );
    let mut again = Session::new(&m, 16, 2);
    assert_eq!(again.feed(&[3, 4, 5]).unwrap(), &before[..]);
}
