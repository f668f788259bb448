//! A session's token loop allocates nothing once warm: feeding the sampled
//! token (the forward pass) and drawing the next one (the sampling chain,
//! whichever steps it runs) make no heap allocation on any thread. What the
//! caller collects (the tokens and text of the answer) is its own.
//!
//! One test in this binary: the counting allocator sees every thread.

use mori_engine::sampling::{Sampler, SamplingParams};
use mori_engine::Session;
use mori_kernels::alloc_count::{allocations_in, Counting};
use mori_model::random::{write_random_model, FileType, RandomSpec};
use mori_model::Model;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn feeding_and_sampling_allocate_nothing_once_warm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_random_model(&RandomSpec::tiny("qwen2", FileType::Q4KM), &path).unwrap();
    let model = Model::load(&path).unwrap();
    let n_vocab = model.hparams.n_vocab;
    let chains = [
        ("greedy", SamplingParams::greedy()),
        ("default", SamplingParams::default()),
        (
            "no top-k: top-p and min-p",
            SamplingParams {
                top_k: 0,
                top_p: 0.9,
                min_p: 0.02,
                ..Default::default()
            },
        ),
        (
            "typical, every token, penalties",
            SamplingParams {
                temperature: 0.7,
                top_k: 0,
                typical_p: 0.9,
                repeat_penalty: 1.3,
                presence_penalty: 0.2,
                frequency_penalty: 0.1,
                logit_bias: vec![(5, -1.0), (9, f32::NEG_INFINITY)],
                ..Default::default()
            },
        ),
    ];
    for (name, params) in chains {
        let mut session = Session::new(&model, 256, 2);
        let mut sampler = Sampler::new(params, n_vocab).unwrap();
        let prompt: Vec<u32> = (0..20).map(|i| 3 + i * 7).collect();
        // One step of generation: feed the last token, draw the next.
        let step = |session: &mut Session, sampler: &mut Sampler, last: u32| {
            let next = sampler.sample(session.feed(&[last]).unwrap()).unwrap();
            sampler.accept(next);
            next
        };
        // Warm-up: the prompt, then enough tokens to fill the penalty window.
        session.feed(&prompt).unwrap();
        prompt.iter().for_each(|&t| sampler.accept(t));
        let mut last = 1;
        for _ in 0..71 {
            last = step(&mut session, &mut sampler, last);
        }
        // Up to the end of the context: the session's record of its tokens
        // must not grow either.
        let n = allocations_in(|| {
            for _ in 0..160 {
                last = step(&mut session, &mut sampler, last);
            }
        });
        assert_eq!(n, 0, "{name}: 160 tokens allocated {n} times");
        assert_eq!(session.n_past(), 20 + 1 + 70 + 160);
    }
}
