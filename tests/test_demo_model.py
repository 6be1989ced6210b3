"""The shipped demo model and its training recipe: data splits, weight packing, corrupt files.

What training itself achieves is measured by `python -m bench wer` and asserted, on words, by the
end-to-end tests; these check the recipe's promises that need no training run.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import save_file

from canary_qwen.checkpoint import EMBED, LM_HEAD
from canary_qwen.wer import normalize, word_error_rate
from export.demo import EMBED_SCALE, ROWS, VALUES, DemoWeightsError, load_packed, pack, sha256, starting_point, unpack
from export.train.corpus import excluded_sentences, load_corpus, split_corpus, words
from export.train.dataset import Encoder, compose, frame_labels
from export.train.espeak_lib import EspeakError
from export.train.speech import (
    HELD_OUT_ACCENTS,
    HELD_OUT_VARIANTS,
    HELD_OUT_VOICES,
    SAMPLE_RATE,
    TRAIN_ACCENTS,
    TRAIN_VARIANTS,
    Voice,
    speak,
    speak_timed,
)
from tests.fixtures.audio.speech import UTTERANCE_TEXTS


@pytest.fixture(scope="module")
def corpus():  # type: ignore[no-untyped-def]
    return load_corpus()


def test_held_out_sentences_never_trained(corpus) -> None:  # type: ignore[no-untyped-def]
    train = {normalize(s) for s in corpus.train}
    assert corpus.held_out and not train & {normalize(s) for s in corpus.held_out}
    vocabulary = corpus.vocabulary()
    assert all(vocabulary[w] >= 2 for s in corpus.held_out for w in words(s))


def test_test_and_bench_sentences_are_excluded(corpus) -> None:  # type: ignore[no-untyped-def]
    banned = {normalize(s) for s in excluded_sentences()}
    assert {normalize(s) for s in UTTERANCE_TEXTS} <= banned
    assert not banned & {normalize(s) for s in (*corpus.train, *corpus.held_out)}


def test_split_is_stable_and_disjoint() -> None:
    sentences = [f"The number {w} is here." for w in ("one", "two", "three", "four", "five", "six")] * 40
    a, b = split_corpus(sentences), split_corpus(list(reversed(sentences)))
    assert set(a.train) == set(b.train) and not set(a.train) & set(a.held_out)


def test_held_out_voices_never_trained() -> None:
    assert len(HELD_OUT_VOICES) >= 2
    assert not set(HELD_OUT_ACCENTS) & set(TRAIN_ACCENTS)
    assert not {v.lower() for v in HELD_OUT_VARIANTS} & {v.lower() for v in TRAIN_VARIANTS}
    for voice in HELD_OUT_VOICES:
        accent, _, variant = voice.partition("+")
        assert accent in HELD_OUT_ACCENTS or variant in HELD_OUT_VARIANTS


def test_wer_normalisation() -> None:
    assert normalize("Hello, World! It's 'fine'.") == "hello world it's fine"
    assert word_error_rate(["a b c", "d e"], ["a b", "D, e f!"]) == pytest.approx(2 / 5)
    assert word_error_rate(["a b"], [""]) == 1.0


def test_pack_keeps_only_what_training_changed() -> None:
    gen = torch.Generator().manual_seed(0)
    seeded = {EMBED: torch.randn(10, 4, generator=gen), "layer.weight": torch.randn(3, 3, generator=gen),
              "frozen.weight": torch.randn(2, generator=gen)}  # fmt: skip
    seeded[LM_HEAD] = seeded[EMBED]
    start = starting_point(seeded)
    torch.testing.assert_close(start[EMBED], seeded[EMBED] * EMBED_SCALE)
    assert start[LM_HEAD] is start[EMBED] and seeded[EMBED].abs().max() > start[EMBED].abs().max()
    # Training scales the live parameter in place, as `export train` does.
    trained = {k: v.clone() for k, v in seeded.items()}
    trained[EMBED].mul_(EMBED_SCALE)
    trained[EMBED][[2, 7]] += 1.0
    trained[LM_HEAD] = trained[EMBED]
    trained["layer.weight"] *= 2
    packed = pack(trained, start)
    assert set(packed) == {ROWS, VALUES, "layer.weight"} and packed[ROWS].tolist() == [2, 7]
    state = unpack(packed, starting_point(seeded), Path("w.safetensors"))
    for name in seeded:
        torch.testing.assert_close(state[name], trained[name], atol=1e-2, rtol=1e-3)  # float16 on disk
    with pytest.raises(DemoWeightsError, match="w.safetensors: tensor layer.weight"):
        unpack({"layer.weight": torch.zeros(4, 4)}, seeded, Path("w.safetensors"))


def _shipped(tmp_path: Path) -> tuple[Path, Path]:
    """A packed weights file and its training record, as `export train` ships them."""
    weights, record = tmp_path / "weights.safetensors", tmp_path / "training.json"
    save_file({"layer.weight": torch.ones(3, 3, dtype=torch.float16)}, str(weights))
    record.write_text(json.dumps({"weights_sha256": sha256(weights)}))
    return weights, record


def test_shipped_weights_load_when_they_match_the_record(tmp_path: Path) -> None:
    weights, record = _shipped(tmp_path)
    assert set(load_packed(weights, record)) == {"layer.weight"}


def test_corrupt_or_missing_weights_name_the_file(tmp_path: Path) -> None:
    weights, record = _shipped(tmp_path)
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DemoWeightsError, match=f"{weights}: sha256 differs"):
        load_packed(weights, record)
    with pytest.raises(DemoWeightsError, match="missing"):
        load_packed(tmp_path / "absent.safetensors", record)
    with pytest.raises(DemoWeightsError, match="training record"):
        load_packed(weights, tmp_path / "absent.json")


def test_the_espeak_library_speaks_as_the_command_line_and_times_each_word() -> None:
    text = "The cat sat on the mat, and then it didn't stay."
    voice = Voice("en-gb+m3", words_per_minute=170, pitch=40)
    audio, timed = speak_timed(text, voice)
    cli = speak(text, voice)
    # Same engine: the command line only adds trailing silence (about a third of a second).
    assert 0 <= (cli.size - audio.size) / SAMPLE_RATE < 0.6
    assert float(np.sqrt(np.mean(audio**2))) == pytest.approx(float(np.sqrt(np.mean(cli**2))), rel=0.25)
    # espeak speaks "on the" as one word; each span runs to the next one's start.
    assert [text[w.start_char : w.end_char] for w in timed] == [
        "The", "cat", "sat", "on the", "mat", "and", "then", "it", "didn't", "stay"]  # fmt: skip
    starts = [w.start_s for w in timed]
    assert starts == sorted(starts) and all(w.end_s > w.start_s for w in timed)
    assert timed[-1].end_s <= audio.size / SAMPLE_RATE
    # After a first sentence espeak sends this one a WORD event at text position 0 past its
    # last word; taken as a word it cut "fear" to no characters, and no frame was labelled.
    fear = "The only thing you have to fear."
    _, timed = speak_timed(fear, voice)
    assert [fear[w.start_char : w.end_char] for w in timed][-2:] == ["to", "fear"]
    with pytest.raises(EspeakError, match="no espeak-ng voice"):
        speak_timed(text, Voice("xx-nowhere"))


def test_frame_labels_follow_the_spoken_words_in_order() -> None:
    utterance = compose(["Time flies like an arrow.", "Fruit flies like a banana."], Voice("en-us"), np.random.default_rng(3))
    ids, offsets = Encoder().with_offsets(utterance.text)
    frames = utterance.audio.size // 160
    labels = frame_labels(utterance, ids, offsets, frames)
    first_word = utterance.words[0].start_s
    assert (labels[: int(first_word * 100)] == -1).all()  # the leading silence
    runs = [int(x) for i, x in enumerate(labels) if x >= 0 and (i == 0 or labels[i - 1] != x)]
    spelled = [t for t, (a, b) in zip(ids, offsets) if utterance.text[a:b].strip(" .")]
    assert [t for i, t in enumerate(runs) if i == 0 or runs[i - 1] != t] == spelled
    between = utterance.spans[0][1], utterance.spans[1][0]  # the pause between the sentences
    assert (labels[int(between[0] * 100) + 2 : int(between[1] * 100) - 2] == -1).all()
    assert 0.4 < float((labels >= 0).mean()) < 0.95


def test_word_checks_judge_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """`assert_words` fails a wrong transcript once a trained model is shipped, and not before."""
    from tests.fixtures import words

    monkeypatch.setattr(words, "_judged", [True])
    words.assert_words("pass the word", "Pass the word.")
    with pytest.raises(AssertionError, match=f"WER 1.00 > {words.MAX_TEST_WER}"):
        words.assert_words("pass the word", "a bird")
    with pytest.raises(AssertionError, match=f"WER 0.67 > {words.MAX_TEST_WER_MANY}"):
        words.assert_words("pass the word", "pass a bird", words.MAX_TEST_WER_MANY)
    monkeypatch.setattr(words, "_judged", [False])
    words.assert_words("pass the word", "a bird")


def test_text_stage_reads_sentences_out_of_audio_sketches(checkpoint_dir: Path) -> None:
    """Some text-stage sequences are the ASR prompt with a sketch of the sentence's audio where
    the audio goes, shaped as the frame labels of real speech are."""
    from transformers import AutoTokenizer

    from canary_qwen.prompt import ASR_PLACEHOLDER_INDEX, asr_prompt_ids
    from canary_qwen.tokenizer import IM_END_ID
    from export.train.trainer import ASR_SHARE, FRAME_S, NO_TOKEN, SILENCE_ID, ChatExamples

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    examples = ChatExamples(tokenizer)
    prompt = asr_prompt_ids(tokenizer)
    head, tail = prompt[:ASR_PLACEHOLDER_INDEX], prompt[ASR_PLACEHOLDER_INDEX + 1 :]
    sentence, other = "Time flies like an arrow, fruit flies like a banana.", "Some remain so."
    ids = examples.encode(sentence)
    rng = np.random.default_rng(0)
    # Half the sketches say two utterance's worth: `sentence` then `other`.
    drawn = [examples(sentence, other, rng, [sentence, other] if k % 2 else ()) for k in range(400)]
    sketched = [(seq, at, before) for seq, at, before in drawn if at.stop > at.start]
    assert all({t for row in before for t in row} == {NO_TOKEN} for _, at, before in drawn if at.stop == at.start)
    assert abs(len(sketched) / len(drawn) - ASR_SHARE) < 0.08
    utterance = compose([sentence], Voice("en-us"), rng)
    ids_real, offsets = Encoder().with_offsets(sentence)
    real = frame_labels(utterance, ids_real, offsets, utterance.audio.size // 160)[4::8]  # encoder frames
    kept, both = [], examples.encode(f"{sentence} {other}")
    for seq, at, rows in sketched:
        before, before2 = [r[0] for r in rows], [r[1] for r in rows]
        assert seq[: at.start] == head and seq[at.stop : at.stop + len(tail)] == tail and seq[-1] == IM_END_ID
        answer = seq[at.stop + len(tail) : -1]
        assert answer in (ids, both)
        assert set(before[: at.start] + before[at.stop :]) == set(before2[: at.start] + before2[at.stop :]) == {NO_TOKEN}
        frames = seq[at]
        # Each spoken frame also holds the two tokens spoken before it: a chain through the sentence.
        spoken_at = [i for i, t in enumerate(frames) if t != SILENCE_ID]
        previous, second = SILENCE_ID, SILENCE_ID
        for i, j in zip(spoken_at, spoken_at[1:] + [None]):
            assert before[at][i] == previous and before2[at][i] == second
            if j is not None and frames[j] != frames[i]:
                previous, second = frames[i], previous
        last = spoken_at[-1]
        assert before[at][last + 1 :] == [frames[last]] * (len(frames) - last - 1)
        assert all(before[at][i] == NO_TOKEN for i in range(last) if frames[i] == SILENCE_ID)
        runs = [t for i, t in enumerate(frames) if t != SILENCE_ID and (i == 0 or frames[i - 1] != t)]
        runs = [t for i, t in enumerate(runs) if i == 0 or runs[i - 1] != t]
        # In order, punctuation without frames; a quiet frame may hide a one-frame token.
        spelled = [t for t in answer if any(c.isalnum() for c in tokenizer.decode([t]))]
        rest = iter(spelled)
        assert all(t in rest for t in runs), runs
        kept.append(len(runs) / len(spelled))
    assert 0.3 < sum(seq[at.stop + len(tail) : -1] == both for seq, at, _ in sketched) / len(sketched) < 0.7
    assert np.mean(kept) > 0.97
    # About as many frames a token as espeak's speech at its middle rate gives.
    spoken = np.mean([sum(t != SILENCE_ID for t in seq[at]) for seq, at, _ in sketched if seq[at.stop + len(tail) : -1] == ids])
    assert 0.6 < spoken / float((real >= 0).sum()) < 1.6, (spoken, FRAME_S)


def test_preceding_tokens_chain_runs_across_pauses() -> None:
    from export.train.trainer import NO_TOKEN, SILENCE_ID, preceding_tokens

    S, N = SILENCE_ID, NO_TOKEN
    # silence, a two-token word, a quiet frame inside a word, a pause, the last word, silence
    frames = [S, S, 5, 5, 6, S, 6, 7, S, S, 8, S, S]
    assert preceding_tokens(frames) == [N, N, S, S, 5, N, 5, 6, N, N, 7, 8, 8]
    assert preceding_tokens([S, S]) == [N, N]
    assert preceding_tokens([9]) == [S]
    # two runs back: the token before the one before; after the last word, the one before it
    assert preceding_tokens(frames, 2) == [N, N, S, S, S, N, S, 5, N, N, 6, 7, 7]
    assert preceding_tokens([9, S], 2) == [S, S]


def test_repeat_positions_follow_spoken_tokens() -> None:
    from export.train.trainer import repeat_positions

    spoken = lambda t: t > 0  # noqa: E731 - 0 stands for punctuation
    # If you can't be good , be careful .
    assert repeat_positions([1, 2, 3, 4, 5, 0, 4, 6, 0], spoken) == [7]
    # be , be , seven: both tokens after the second "be" follow it, the comma between too
    assert repeat_positions([4, 0, 4, 0, 7], spoken) == [3, 4]
    assert repeat_positions([0, 0, 1, 0], spoken) == []


def test_misheard_swaps_a_share_of_the_answer_for_corpus_tokens() -> None:
    import torch

    from export.train.trainer import misheard

    inputs, tokens = torch.arange(1000), torch.tensor([5000, 5001, 5002])
    rng = torch.Generator().manual_seed(0)
    assert misheard(inputs, 0.0, tokens, rng) is inputs
    assert torch.equal(rng.get_state(), torch.Generator().manual_seed(0).get_state())  # no draw at 0
    out = misheard(inputs, 0.1, tokens, rng)
    swapped = out != inputs
    assert 60 <= int(swapped.sum()) <= 140
    assert set(out[swapped].tolist()) <= set(tokens.tolist())


def test_history_keys_repeated_tokens_apart() -> None:
    """A token said twice ("be good, be careful"): the frames after each hold the same token one
    run back, and different ones two runs back, so the base can tell where it is reading."""
    from export.train.trainer import PRECEDING_BACK, SILENCE_ID, history

    S = SILENCE_ID
    be, good, careful, cant = 1, 2, 3, 4
    frames = [S, cant, be, be, good, S, be, careful, S]
    rows = history(frames)
    assert PRECEDING_BACK == 2 and all(len(r) == 2 for r in rows)
    assert rows[4] == [be, cant] and rows[7] == [be, good]


@pytest.fixture()
def fresh_salm(checkpoint_dir: Path):  # type: ignore[no-untyped-def]
    """A SALM of its own: the training stages change the model they are given."""
    from nemo.collections.speechlm2.models import SALM

    return SALM.from_pretrained(str(checkpoint_dir))


def test_text_stage_scores_only_the_answer_after_a_sketch(fresh_salm, corpus) -> None:  # type: ignore[no-untyped-def]
    """A sequence with an audio sketch is scored on its answer and IM_END alone; a text-only
    sequence on every token after the first."""
    from canary_qwen.tokenizer import IM_END_ID
    from export.train.trainer import TextStage, TrainConfig

    stage = TextStage(fresh_salm, fresh_salm.tokenizer.tokenizer, list(corpus.train[:64]), TrainConfig())
    head, tail = stage.examples.asr_template
    config = TrainConfig()
    ids, scored, _, noise, weight = stage.batch(3)
    sketched = repeats = 0
    for row, score, level, w in zip(ids.tolist(), scored.tolist(), noise.tolist(), weight.tolist()):
        n = sum(t >= 0 for t in row)
        if row[: len(head)] == head and any(level):
            sketched += 1
            answer = max(i for i in range(n) if row[i - len(tail) : i] == tail)
            assert row[n - 1] == IM_END_ID
            assert [i for i in range(len(row)) if score[i]] == list(range(answer, n))
            # A token whose last spoken token before it the answer said before weighs more: the
            # lookup is ambiguous there (punctuation has no frames, so it is skipped).
            spoken = [i for i in range(answer, n) if stage.examples.sketch.spoken(row[i])]
            heavy = []
            for i in range(answer, n):
                last = [j for j in spoken if j < i]
                if last and row[last[-1]] in [row[j] for j in last[:-1]]:
                    heavy.append(i)
            assert [i for i in range(len(row)) if w[i] != 1.0] == heavy
            assert all(w[i] == config.repeat_weight for i in heavy)
            repeats += len(heavy)
        else:
            assert [i for i in range(len(row)) if score[i]] == list(range(1, n))
            assert set(w) == {1.0}
    assert 0 < sketched < len(ids)
    assert repeats > 0
    # The loss weighs them; the cross-entropy it logs does not.
    out = stage.loss(3)
    assert not torch.isclose(out["loss"], out["ce"])
    stage.config.repeat_weight = 1.0
    out = stage.loss(3)
    assert torch.isclose(out["loss"], out["ce"])


def _aligned_items(salm) -> tuple[list[int], list[Any]]:  # type: ignore[no-untyped-def]
    """Six stage items of random mel with 8 words of 20 mel frames each, silence between."""
    from export.train.trainer import Item

    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.choice(np.arange(300, 5000), 40, replace=False)]
    items = []
    for _ in range(6):
        frames = int(rng.integers(200, 400))
        said = rng.choice(tokens, 8).astype(np.int32)
        labels = np.full(frames, -1, dtype=np.int32)
        for k, t in enumerate(said):
            labels[20 + 22 * k : 40 + 22 * k] = t
        mel = rng.normal(size=(salm.perception.encoder._feat_in, frames)).astype(np.float16)
        items.append(Item(mel, said, labels, [str(p) for p in rng.choice(list(_PHONEMES), 20)]))
    return tokens, items


_PHONEMES = ("D", "@", "k", "a", "t")


def test_stage_encoder_trains_the_encoder_alone_on_aligned_losses(fresh_salm) -> None:  # type: ignore[no-untyped-def]
    """Stage encoder trains the encoder and its heads on CTC over tokens and phonemes and the
    per-frame token loss; the projection and the LLM stay as they were (the text stage, which
    runs beside it, owns the LLM)."""
    from export.train.trainer import AsrStage, TrainConfig

    tokens, items = _aligned_items(fresh_salm)
    stage = AsrStage(fresh_salm, list(range(15)), tokens, TrainConfig(), "encoder", phoneme_names=_PHONEMES[:4])
    assert stage._phoneme_classes(["t", "D", "x"]).tolist() == [5, 1, 5]  # 0 is blank, 5 "other"
    untouched = {n: p.detach().clone() for n, p in fresh_salm.named_parameters() if not n.startswith("perception.encoder.")}
    encoder_before = {n: p.detach().clone() for n, p in fresh_salm.perception.encoder.named_parameters()}
    optimizer = torch.optim.AdamW(stage.parameters(), lr=1e-3)
    losses = []
    for step in range(6):
        out = stage.loss(items, step)
        assert set(out) == {"loss", "ctc", "phoneme_ctc", "align", "audio_s"}
        losses.append(float(out["loss"]))
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    assert losses[-1] < losses[0], losses
    assert all(not torch.equal(p, encoder_before[n]) for n, p in fresh_salm.perception.encoder.named_parameters() if p.ndim > 1)
    assert all(torch.equal(p, untouched[n]) for n, p in fresh_salm.named_parameters() if n in untouched)


def test_stage_asr_leaves_a_frozen_encoder_as_stage_encoder_made_it(fresh_salm) -> None:  # type: ignore[no-untyped-def]
    """With the encoder's share at 0, stage asr trains projection and LoRA on the LLM loss and the
    match alone: no gradient reaches the encoder, and its BatchNorm statistics stay put (its frames
    are those serving computes)."""
    from export.train.trainer import AsrStage, TrainConfig

    tokens, items = _aligned_items(fresh_salm)
    stage = AsrStage(fresh_salm, list(range(15)), tokens, TrainConfig(asr_encoder_lr_scale=0.0))
    assert stage.heads() == {}
    fresh_salm.train()
    encoder_before = {n: t.clone() for n, t in fresh_salm.perception.encoder.state_dict().items()}
    proj_before = fresh_salm.perception.proj.weight.detach().clone()
    optimizer = torch.optim.AdamW(stage.parameters(), lr=1e-3)
    out = stage.loss(items[:2], 0)
    assert set(out) == {"loss", "ce", "match", "audio_s"}
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    assert all(torch.equal(t, encoder_before[n]) for n, t in fresh_salm.perception.encoder.state_dict().items())
    assert not torch.equal(fresh_salm.perception.proj.weight, proj_before)


def test_stage_asr_trains_only_its_embedding_rows(fresh_salm) -> None:  # type: ignore[no-untyped-def]
    """With `asr_rows_lr_scale`, stage asr trains the embedding rows of the corpus's tokens, the
    prompt and silence, lays them into the model's table after each step, and leaves every other
    row as it was (the shipped file holds only changed rows)."""
    from export.train.trainer import AsrStage, TrainConfig

    tokens, items = _aligned_items(fresh_salm)
    stage = AsrStage(fresh_salm, list(range(15)), tokens, TrainConfig(asr_rows_lr_scale=1.0))
    assert stage.trained_rows is not None and stage.rows is stage.trained_rows.param
    ids = stage.trained_rows.ids
    assert set(range(15)) | set(tokens) <= set(ids.tolist())
    table = fresh_salm.embed_tokens.weight
    before = table.detach().clone()
    optimizer = torch.optim.AdamW(stage.param_groups(), lr=1e-3)
    out = stage.loss(items[:2], 0)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    stage.sync_rows()
    changed = (table.detach() != before).any(dim=1)
    assert changed.any() and set(changed.nonzero().squeeze(1).tolist()) <= set(ids.tolist())
    assert torch.equal(table.detach()[ids], stage.rows.detach())
    assert torch.equal(stage._embed(ids), stage.rows)  # the loss reads the trained rows
    off = AsrStage(fresh_salm, list(range(15)), tokens, TrainConfig())
    assert off.rows is None and torch.equal(off._embed(ids), table.detach()[ids])


def test_stage_bridge_trains_encoder_and_projection_to_be_read(fresh_salm) -> None:  # type: ignore[no-untyped-def]
    """Stage bridge trains the encoder and the projection (not the LLM) on the aligned losses, the
    match and the read: projected frames classified by dot product with the embedding table as
    the spoken token and, each turned back by its rotation, the two tokens before it."""
    from export.train.trainer import AsrStage, TrainConfig

    tokens, items = _aligned_items(fresh_salm)
    stage = AsrStage(fresh_salm, list(range(15)), tokens, TrainConfig(), "bridge", phoneme_names=_PHONEMES)
    llm_before = {n: p.detach().clone() for n, p in fresh_salm.llm.named_parameters()}
    proj_before = fresh_salm.perception.proj.weight.detach().clone()
    optimizer = torch.optim.AdamW(stage.parameters(), lr=1e-3)
    reads = []
    for step in range(6):
        out = stage.loss(items, step)
        assert set(out) == {"loss", "ctc", "phoneme_ctc", "align", "match", "read", "audio_s"}
        reads.append(float(out["read"]))
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    assert reads[-1] < reads[0], reads
    assert not torch.equal(fresh_salm.perception.proj.weight, proj_before)
    assert all(torch.equal(p, llm_before[n]) for n, p in fresh_salm.llm.named_parameters())
    # A frame that is exactly its sketch is read as its tokens.
    spoken = torch.tensor([tokens[0], tokens[1]])
    before = torch.tensor([[tokens[2], tokens[4]], [tokens[3], tokens[5]]])  # per frame: 1 and 2 runs back
    _, exact = stage._sketch_target(spoken[None], before[None])
    assert float(stage._read(exact, spoken, before)) < float(stage._read(exact.flip(0), spoken, before))
    # ... and each token back through its own rotation: swapped columns read worse.
    assert float(stage._read(exact, spoken, before)) < float(stage._read(exact, spoken, before[:, [1, 0]]))


def test_sketch_share_falls_from_one_to_zero() -> None:
    from export.train.trainer import sketch_share

    assert sketch_share(0, 2000, 0.5) == 1.0 and sketch_share(500, 2000, 0.5) == 0.5
    assert sketch_share(1000, 2000, 0.5) == 0.0 == sketch_share(1999, 2000, 0.5)
    assert sketch_share(0, 2000, 0.0) == 0.0


def test_sketch_edges_blend_with_the_frame_before() -> None:
    """`blur_edges` mixes only sketch frames that follow a different sketch frame, and with the
    frame before them, at most half and half."""
    from export.train.trainer import blur_edges

    embeds = torch.tensor([[[9.0], [1.0], [1.0], [2.0], [3.0], [7.0]]])
    sketch = torch.tensor([[False, True, True, True, True, False]])
    out = blur_edges(embeds, sketch, 1.0, torch.Generator().manual_seed(0))[0, :, 0]
    assert out[0] == 9 and out[1] == 1 and out[2] == 1 and out[5] == 7  # not sketch, first, or no edge
    assert 1.5 <= out[3] < 2 and 2.5 <= out[4] < 3
    assert torch.equal(blur_edges(embeds, sketch, 0.0, torch.Generator().manual_seed(0)), embeds)


def test_phonemes_follow_the_voices_accent() -> None:
    """The phoneme CTC's targets are what espeak says in the voice's own accent, stress left out."""
    from export.train.speech import phoneme_inventory, phonemes

    us, caribbean = phonemes("That is the thing.", Voice("en-us")), phonemes("That is the thing.", Voice("en-029"))
    assert us[:3] == ["D", "a", "t"] and caribbean[:3] == ["d", "a", "t"]
    assert not any("'" in p or "," in p or p.startswith("_") for p in us)
    inventory = phoneme_inventory(["That is the thing."])
    assert inventory == sorted(inventory) and {"D", "d", "N"} <= set(inventory)


def test_projection_fit_is_the_least_squares_map_to_the_sketch(fresh_salm) -> None:  # type: ignore[no-untyped-def]
    """Before stage asr's first step the projection is fitted to map the encoder's frames onto
    the sketch's embeddings: the error it reports is the match loss the stage then trains on,
    and no small change of the map comes closer."""
    from export.train.trainer import AsrStage, TrainConfig, _padded_mel, sketch_embeddings

    tokens, items = _aligned_items(fresh_salm)
    stage = AsrStage(fresh_salm, list(range(15)), tokens, TrainConfig())
    batches = [items[:3], items[3:]]

    def errors() -> tuple[float, float]:
        """The match loss over all frames, and the squared error least squares minimises."""
        fresh_salm.eval()
        projected, targets = [], []
        with torch.no_grad():
            for batch in batches:
                mel, lengths = _padded_mel(batch)
                encoded, enc_len = fresh_salm.perception.encoder(audio_signal=mel, length=lengths)
                spoken = stage._frame_tokens(encoded.shape[2], enc_len, [item.labels for item in batch])
                valid = spoken >= 0
                projected.append(fresh_salm.perception.proj(encoded.transpose(1, 2))[valid])
                targets.append(sketch_embeddings(stage.table, spoken[valid], stage._preceding(spoken)[valid], stage.rotations))
        x, y = torch.cat(projected), torch.cat(targets)
        return float(((x - y).pow(2).sum(-1) / y.pow(2).sum(-1)).mean()), float((x - y).pow(2).sum())

    before, _ = errors()
    residual = stage.fit_projection(batches, ridge=1e-9)
    assert residual < before / 2
    fitted, squared = errors()
    assert abs(fitted - residual) < 1e-3 * residual + 1e-5
    proj = fresh_salm.perception.proj
    with torch.no_grad():
        proj.weight.add_(1e-2 * proj.weight.std() * torch.randn(proj.weight.shape, generator=torch.Generator().manual_seed(1)))
    assert errors()[1] > squared


def test_shuffled_sentences_use_only_the_sentences_words(corpus) -> None:  # type: ignore[no-untyped-def]
    """Half the training speech says training words in an order no sentence has, written as a
    sentence: no case or punctuation carried over from where a word stood."""
    from export.train.corpus import shuffled_words, words
    from export.train.dataset import SHUFFLED_UTTERANCES, random_utterance

    rng = np.random.default_rng(0)
    a, b = "Time flies like an arrow, I said.", "Some remain so."
    for _ in range(50):
        said = shuffled_words([a, b], rng)
        assert said[0].isupper() and said.endswith(".") and said.count(".") == 1 and "," not in said
        assert len(said.split()) >= 3 and not (Counter(words(said)) - Counter(words(a + " " + b)))
        inner = said[:-1].split()[1:]
        assert "Time" not in inner and "Some" not in inner  # only a sentence's start made them capitals
        assert all(w == "I" for w in inner if w.lower() == "i")
    assert shuffled_words(["Go."], rng) == "Go."
    train = list(corpus.train)
    known = set(train)
    texts = []
    for _ in range(80):
        with_speech = random_utterance(train, rng)
        texts.append(with_speech.text)
        assert not (Counter(words(with_speech.text)) - Counter(w for s in train for w in words(s)))
    whole = [t for t in texts if any(t.startswith(s) for s in known)]
    assert abs(1 - len(whole) / len(texts) - SHUFFLED_UTTERANCES) < 0.2


def test_text_stage_sketches_say_what_speech_utterances_say(fresh_salm, corpus) -> None:  # type: ignore[no-untyped-def]
    """The base learns to read sketches of utterances drawn as the speech's are: some of
    several sentences, some of shuffled words."""
    from export.train.trainer import TextStage, TrainConfig

    train = list(corpus.train)
    stage = TextStage(fresh_salm, fresh_salm.tokenizer.tokenizer, train, TrainConfig())
    head, tail = stage.examples.asr_template
    tokenizer = fresh_salm.tokenizer.tokenizer
    answers = []
    for step in range(6):
        ids, scored, _, noise, _ = stage.batch(step)
        for row, score, level in zip(ids.tolist(), scored.tolist(), noise.tolist()):
            if row[: len(head)] == head and any(level):
                answers.append(tokenizer.decode([t for t, s in zip(row, score) if s][:-1]))
    known = set(train)
    several = [a for a in answers if any(a.startswith(f"{s} ") for s in known)]  # a sentence, then more
    shuffled = [a for a in answers if not any(a.startswith(s) for s in known)]
    assert several and shuffled and len(shuffled) < len(answers)


def test_text_stage_shares_of_sketches_and_shuffles_are_settings(fresh_salm, corpus) -> None:  # type: ignore[no-untyped-def]
    """`text_asr_share` 1 and `text_shuffled_share` 1: every text-stage sequence is the ASR
    prompt with a sketch, and no sketch says a sentence of the corpus."""
    from export.train.trainer import TextStage, TrainConfig

    train = list(corpus.train)
    config = TrainConfig(text_asr_share=1.0, text_shuffled_share=1.0)
    stage = TextStage(fresh_salm, fresh_salm.tokenizer.tokenizer, train, config)
    head, _ = stage.examples.asr_template
    tokenizer = fresh_salm.tokenizer.tokenizer
    rows = 0
    for step in range(4):
        ids, scored, _, noise, _ = stage.batch(step)
        for row, score, level in zip(ids.tolist(), scored.tolist(), noise.tolist()):
            rows += 1
            assert row[: len(head)] == head and any(level)
            answer = tokenizer.decode([t for t, s in zip(row, score) if s][:-1])
            assert not any(answer.startswith(s) for s in train), answer
    assert rows == 4 * config.text.batch


def test_every_token_an_utterance_can_say_is_one_both_stages_train(fresh_salm, corpus) -> None:  # type: ignore[no-untyped-def]
    """Shuffled utterances put any word first (no space before it) or after any other: their
    tokens must all be in the text stage's rows and stage asr's candidates, or a lookup of -1
    trains on the wrong token (834 of 2,196 tokens did until 2026-12-04)."""
    from export.train.command import Run
    from export.train.dataset import Encoder, utterance_sentences
    from export.train.trainer import AsrStage, TextStage, TrainConfig, _check_known

    train = tuple(corpus.train[:300])
    ids = Run._corpus_ids(train)
    config = TrainConfig()
    text = TextStage(fresh_salm, fresh_salm.tokenizer.tokenizer, list(train), config)
    asr = AsrStage(fresh_salm, list(range(15)), ids, config)
    encode = Encoder()
    rng = np.random.default_rng(5)
    said = {t for _ in range(300) for t in encode(" ".join(utterance_sentences(train, rng, 160)))}
    sentences_only = {t for s in train for t in encode(s)} | {t for s in train for t in encode(" " + s)}
    assert said - sentences_only, "the draw holds no token outside the sentences' own: the test shows nothing"
    tokens = torch.tensor(sorted(said))
    _check_known(tokens, text.compact[tokens], "text")
    _check_known(tokens, asr.where[tokens], "asr")
    with pytest.raises(ValueError, match="outside"):
        _check_known(tokens, torch.where(tokens == tokens[0], -1, 0), "a table without the first")


def test_stage_asr_learning_rate_shares(fresh_salm, corpus) -> None:  # type: ignore[no-untyped-def]
    """Stage asr's optimizer groups hold every trained parameter once, the encoder (with its
    heads), the projection and LoRA each at its configured share of the rate."""
    from export.train.command import Run
    from export.train.trainer import AsrStage, TrainConfig

    config = TrainConfig(
        asr_encoder_lr_scale=0.1, asr_lora_lr_scale=0.2, asr_projection_lr_scale=0.3, asr_base_lr_scale=0.4, asr_rows_lr_scale=0.5
    )
    ids = Run._corpus_ids(tuple(corpus.train[:50]))
    for encoder_only in (True, False):
        stage = AsrStage(fresh_salm, list(range(15)), ids, config, "encoder" if encoder_only else "asr")
        groups = stage.param_groups()
        grouped = [p for g in groups for p in g["params"]]
        assert len({id(p) for p in grouped}) == len(grouped) == len(stage.parameters())
        assert {id(p) for p in grouped} == {id(p) for p in stage.parameters()}
        names = {id(p): n for n, p in fresh_salm.named_parameters()}
        if stage.rows is not None:
            names[id(stage.rows)] = "rows"

        def kind(p: torch.nn.Parameter) -> str:
            name = names.get(id(p), "head")  # the auxiliary heads are the stage's own
            if name == "rows":
                return "rows"
            if "lora_" in name:
                return "lora"
            if name.startswith("llm."):
                return "base"
            return name.split(".")[1] if name.startswith("perception.") else name

        expected = {"encoder": 0.1, "lora": 0.2, "proj": 0.3, "base": 0.4, "rows": 0.5}
        for group in groups:
            kinds = {kind(p) for p in group["params"]}
            if encoder_only:
                assert group["lr_scale"] == 1.0 and kinds <= {"encoder", "head"}
            else:
                share = {expected[k] for k in kinds if k in expected}
                assert share == {group["lr_scale"]}, (kinds, group["lr_scale"])
        trained = {names.get(id(p), "head") for p in grouped}
        assert not any("embed_tokens" in n or "lm_head" in n for n in trained)  # the table stays the text stage's
        assert any(n.startswith("llm.") and "lora_" not in n for n in trained) != encoder_only
        assert ("rows" in trained) != encoder_only


def test_replay_scores_only_llm_mode_answers(fresh_salm, corpus) -> None:  # type: ignore[no-untyped-def]
    """Stage asr's replay: repeat questions and free prompts (no audio), scored on the answer and
    its IM_END alone, every target a token stage asr scores; the same step draws the same batch."""
    from canary_qwen.tokenizer import IM_END_ID
    from export.train.command import Run
    from export.train.llm_mode import Replay
    from export.train.trainer import ChatExamples

    examples = ChatExamples(fresh_salm.tokenizer.tokenizer)
    train = list(corpus.train[:64])
    replay = Replay(examples, train, seed=0, size=16)
    ids, scored = replay(5)
    assert ids.shape[0] == 16 and torch.equal(ids, replay(5)[0]) and not torch.equal(ids, replay(6)[0])
    answers = {tuple(examples.encode(s)) for s in train}
    cand = set(Run._corpus_ids(tuple(train))) | {IM_END_ID}
    kinds = set()
    for row, score in zip(ids.tolist(), scored.tolist()):
        n = sum(t >= 0 for t in row)
        at = [i for i in range(len(row)) if score[i]]
        assert at == list(range(at[0], n - 1)) and row[n - 1] == IM_END_ID
        answer = tuple(row[at[0] + 1 : n - 1])
        assert answer in answers and set(answer) <= cand
        prompt = row[: at[0] + 1]
        kinds.add(any(prompt[i : i + len(answer)] == list(answer) for i in range(len(prompt))))  # a repeat
    assert kinds == {True, False}


def test_stage_asr_replay_trains_the_base_with_lora_off(fresh_salm, corpus) -> None:  # type: ignore[no-untyped-def]
    """With `asr_replay_weight`, stage asr's loss adds the replay's cross-entropy, computed with
    LoRA off: it reaches the base, never LoRA. Off (the default), no replay runs."""
    from export.train.command import Run
    from export.train.llm_mode import Replay
    from export.train.trainer import AsrStage, ChatExamples, TrainConfig

    train = list(corpus.train[:64])
    said, items = _aligned_items(fresh_salm)
    replay = Replay(ChatExamples(fresh_salm.tokenizer.tokenizer), train, seed=0, size=4)
    tokens = said + Run._corpus_ids(tuple(train))
    off = AsrStage(fresh_salm, list(range(15)), tokens, TrainConfig(), replay=replay)
    assert off.replay is None and "replay" not in off.loss(items[:1], 0)
    stage = AsrStage(fresh_salm, list(range(15)), tokens, TrainConfig(asr_replay_weight=1.0), replay=replay)
    lora = [p for n, p in fresh_salm.named_parameters() if "lora_B" in n]
    for p in lora:  # LoRA's B starts at zero, which would hide whether the replay reads it
        torch.nn.init.normal_(p, std=0.02)
    scored = torch.cat([stage._embed(stage.cand), stage.table[stage.unused[:64]]])
    replayed = stage._replay_ce(0, scored)
    replayed.backward()
    assert all(p.grad is None or not p.grad.any() for p in lora)
    base = [p for n, p in fresh_salm.named_parameters() if n.startswith("llm.") and "lora_" not in n and p.requires_grad]
    assert base and any(p.grad is not None and p.grad.any() for p in base)
    with fresh_salm.llm.disable_adapter():
        assert torch.isclose(stage._replay_ce(0, scored), replayed)
    out = stage.loss(items[:1], 0)
    assert torch.isclose(out["loss"], out["ce"] + out["match"] + out["replay"])


def test_training_settings_from_the_command_line() -> None:
    """`--set KEY=VALUE`: a top-level or a stage's setting, read as the field's type; anything
    else fails naming the item."""
    from export.train.trainer import TrainConfig, apply_overrides

    config = TrainConfig()
    apply_overrides(config, ["asr_replay_weight=0.5", "asr.peak_lr=2e-4", "text.steps=12", "asr_replay_batch=4"])
    assert (config.asr_replay_weight, config.asr.peak_lr, config.text.steps, config.asr_replay_batch) == (0.5, 2e-4, 12, 4)
    assert config.encoder.peak_lr == TrainConfig().encoder.peak_lr
    for bad in ("nope=1", "asr=3", "asr.nope=1", "seed.steps=1", "text.steps=1.5", "asr_replay_weight", "ctc_weight=x"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            apply_overrides(TrainConfig(), [bad])


def test_training_from_a_shipped_model_checks_its_arguments(tmp_path: Path) -> None:
    """`--from DIR` runs stages text and asr in one process on the shipped encoder: another
    `--stage`, an encoder that would train on losses of heads that were not shipped, or a
    directory without a training record stop the run before any work, with a message that says
    why; the encoder may train on the LLM loss alone."""
    import argparse

    from export.train.command import Run, add_arguments

    def run(*argv: str) -> Run:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return Run(parser.parse_args(["--work", str(tmp_path / "work"), *argv]))

    shipped = Path(__file__).resolve().parents[1] / "export" / "demo"
    with pytest.raises(SystemExit, match="--stage"):
        run("--from", str(shipped), "--stage", "text")
    with pytest.raises(SystemExit, match="ctc_weight=0, phoneme_weight=0, align_weight=0"):
        run("--from", str(shipped), "--set", "asr_encoder_lr_scale=0.1")
    with pytest.raises(SystemExit, match="align_weight=0$"):
        run("--from", str(shipped), "--set", "asr_encoder_lr_scale=0.1", "--set", "ctc_weight=0", "--set", "phoneme_weight=0")
    on_the_llm_loss = run("--from", str(shipped), *(f"--set={key}=0" for key in ("ctc_weight", "phoneme_weight", "align_weight")),
                          "--set", "asr_encoder_lr_scale=0.3")
    assert on_the_llm_loss.config.asr_encoder_lr_scale == 0.3
    with pytest.raises(SystemExit, match="training.json"):
        run("--from", str(tmp_path))
    started = run("--from", str(shipped))
    assert started.start_record is not None and started.start_record["weights_sha256"]


def test_training_log_gains_new_columns_without_losing_rows(tmp_path: Path) -> None:
    """A log written before a column was added is rewritten under the new header, rows kept."""
    import csv

    from export.train.trainer import Log

    path = tmp_path / "log.csv"
    old = [f for f in Log.FIELDS if f != "replay"]
    path.write_text(",".join(old) + "\n" + ",".join("text" if f == "stage" else "1" for f in old) + "\n")
    Log(path).write(stage="asr", step=2, replay=0.5)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == Log.FIELDS
    assert (rows[0]["stage"], rows[0]["loss"], rows[0]["replay"]) == ("text", "1", "")
    assert (rows[1]["stage"], rows[1]["replay"]) == ("asr", "0.5")


def test_multi_sentence_evaluation_set(corpus) -> None:  # type: ignore[no-untyped-def]
    """The run's second evaluation set: in every held-out voice, clips of three different
    held-out sentences with pauses (as long audio's pieces hold), the same ones for the same seed."""
    from export.train.command import _multi_sentence_set

    held_out = list(corpus.held_out)
    clips = _multi_sentence_set(held_out, seed=0, per_voice=2)
    assert [c[0] for c in clips] == [v for v in HELD_OUT_VOICES for _ in range(2)]

    def splits(text: str, left: int) -> list[list[str]]:
        """Ways to read `text` as `left` held-out sentences joined by spaces."""
        if left == 1:
            return [[text]] if text in held_out else []
        return [[s, *rest] for s in held_out if text.startswith(s + " ") for rest in splits(text[len(s) + 1 :], left - 1)]

    for _, text, audio in clips:
        assert any(len(set(said)) == 3 for said in splits(text, 3)), text
        assert audio.size > 3 * SAMPLE_RATE
    # The same sentences (espeak-ng's audio for some voice variants is not bit-exact run to run).
    assert [c[1] for c in _multi_sentence_set(held_out, seed=0, per_voice=2)] == [c[1] for c in clips]
