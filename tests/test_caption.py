"""Suggested source captions (``rnri.editor.caption``): the shapes analyzer's caption in the tiny model's grammar; a
transformers captioning model (a tiny random BLIP built offline from configs, with an offline tokenizer) loaded
through the real loading code and run through the service; and the failures that leave the field manual."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
)

import rnri
import rnri.editor as ed
from rnri.editor import caption
from rnri.shapes.analyze import described
from rnri.shapes.render import render
from rnri.shapes.world import Scene, Thing, scenes

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "circle", "on", "blue", "background"]


def photo_of(image: Image.Image) -> ed.Photo:
    return ed.Photo(image, "digest", [])


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory):
    """A tiny random BLIP captioner in a folder, as ``save_pretrained`` writes a Hub model (safetensors); its
    decoder's output bias makes every next token "red", so its caption is known: "red" ``MAX_NEW_TOKENS`` times."""
    folder = tmp_path_factory.mktemp("blip")
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, bos_token="[DEC]")
    text = dict(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=64, bos_token_id=5, sep_token_id=3, pad_token_id=0,
                eos_token_id=3)  # fmt: skip
    vision = dict(hidden_size=16, image_size=32, patch_size=8, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32)  # fmt: skip
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16))
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[WORDS.index("red")] = 1e3
    model.save_pretrained(folder, safe_serialization=True)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return folder


def test_the_analyzer_writes_the_caption_in_the_worlds_grammar():
    scene = Scene((Thing("circle", "red", "large", 20, 32), Thing("star", "yellow", "small", 46, 30)), "blue")
    assert described(render(scene).image) == "a large red circle and a small yellow star on a blue background"
    assert all(described(render(s).image) == s.caption for s in scenes(7, 40, "all"))


def test_the_analyzer_suggests_nothing_for_a_picture_from_outside_the_world(image):
    assert described(image) is None  # random noise: no background of the world
    assert described(render(Scene((), "striped")).image) is None  # a background without any object


def test_the_tiny_model_suggests_the_analyzers_caption_and_never_replaces_a_prompt(pipe):
    captioning = ed.open_captioning("auto", "tiny", pipe)
    assert captioning.name == "shapes" and captioning.note is None
    scene = scenes(3, 1, "all")[0]
    photo = photo_of(render(scene).image.resize((256, 256), Image.Resampling.NEAREST))
    assert captioning.suggest(photo) == ed.Suggestion(scene.caption)
    assert captioning.suggest(photo, current="a photo I described") == ed.Suggestion(None)
    assert captioning.suggest(photo, current="   ").text == scene.caption  # blank is empty
    nothing = captioning.suggest(photo_of(Image.new("RGB", (64, 64), (128, 128, 128))))
    assert nothing.text is None and "found no shape" in nothing.note


def test_a_captioning_model_loads_like_the_main_model_and_captions_through_the_service(blip_folder, pipe):
    captioning = ed.open_captioning(str(blip_folder), "tiny", pipe)
    assert captioning.note is None and captioning.name == str(blip_folder)
    loaded = caption.load_image_captioner(str(blip_folder), pipe._execution_device, pipe.dtype)  # the resident one
    assert loaded.model.dtype == pipe.dtype and loaded.model.device == pipe._execution_device
    assert not any(p.requires_grad for p in loaded.model.parameters())
    suggestion = captioning.suggest(photo_of(Image.new("RGB", (80, 60), (200, 30, 30))))
    assert suggestion == ed.Suggestion(" ".join(["red"] * caption.MAX_NEW_TOKENS))


def test_a_captioning_model_is_any_auto_model_not_only_blip(blip_folder):
    """What the service computes is the model's own greedy caption, as its model card's example computes it."""
    model = BlipForConditionalGeneration.from_pretrained(blip_folder).eval()
    model.text_decoder.cls.predictions.bias.data[WORDS.index("red")] = 0.0  # a caption of random words now
    processor = BlipProcessor.from_pretrained(blip_folder)
    captioner = caption.ImageCaptioner(processor, model)
    photo = Image.new("RGB", (40, 40), (10, 200, 40))
    ids = model.generate(**processor(images=photo, return_tensors="pt"), max_new_tokens=caption.MAX_NEW_TOKENS)
    assert captioner(photo) == (processor.decode(ids[0], skip_special_tokens=True).strip() or None)


def test_without_safetensors_or_a_model_the_field_stays_manual_with_one_note(blip_folder, pipe, tmp_path):
    unsafe = tmp_path / "unsafe"  # the same model as a pickle (pytorch_model.bin): never loaded
    model = BlipForConditionalGeneration.from_pretrained(blip_folder)
    model.config.save_pretrained(unsafe)
    torch.save(model.state_dict(), unsafe / "pytorch_model.bin")
    BlipProcessor.from_pretrained(blip_folder).save_pretrained(unsafe)
    for where, words in ((unsafe, "no captioning model with .safetensors weights"), (tmp_path / "nothing", "no such")):
        captioning = ed.open_captioning(str(where), "tiny", pipe)
        assert captioning.describe is None and words in captioning.note and "\n" not in captioning.note
        assert captioning.suggest(photo_of(Image.new("RGB", (64, 64)))) == ed.Suggestion(None, captioning.note)


def test_a_failing_captioner_gives_a_note_not_an_error():
    def broken(image):
        raise RuntimeError("CUDA out of memory")

    suggestion = ed.Captioning(broken, "some/model").suggest(photo_of(Image.new("RGB", (64, 64))))
    assert suggestion.text is None and "failed (RuntimeError)" in suggestion.note


def test_none_turns_suggestions_off_silently_and_the_option_describes_itself(pipe):
    assert ed.open_captioning("none", "tiny", pipe).suggest(photo_of(Image.new("RGB", (64, 64)))) == ed.Suggestion(
        None
    )
    setting = ed.settings_of(ed.CaptionOptions)["captioner"]
    assert setting.default == "auto" and setting.flag == "--captioner" and "BLIP" in setting.option.help


def test_auto_is_blip_base_on_a_photo_model(monkeypatch, pipe):
    asked = []
    monkeypatch.setattr(caption, "load_image_captioner", lambda *args: asked.append(args) or (lambda image: "x"))
    assert ed.open_captioning("auto", rnri.DEFAULT_MODEL, pipe).name == caption.CAPTION_MODEL
    assert asked == [(caption.CAPTION_MODEL, pipe._execution_device, pipe.dtype)]


def test_an_unreachable_hub_fails_at_once_with_a_short_note(monkeypatch, pipe):
    import httpx
    from huggingface_hub import HfApi

    def unreachable(self, repo_id, **options):
        raise httpx.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "model_info", unreachable)  # the one request made when the cache has no copy
    captioning = ed.open_captioning("someone/a-captioner-in-no-cache", "tiny", pipe)
    assert captioning.describe is None
    assert "not in the local Hugging Face cache and the Hub cannot be reached" in captioning.note
