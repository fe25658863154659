"""ImageNet photos named by WordNet ID as labelled data, and paired accuracy comparisons."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgecnn.data.datasets import is_synset_folder, open_dataset
from edgecnn.data.photos import sample_photos
from edgecnn.data.transforms import Preprocess
from edgecnn.labels import imagenet_labels, imagenet_synsets, synset_index
from edgecnn.paired import change_text, mcnemar_p, pack_hits, paired_difference, unpack_hits
from edgecnn.pipelines.quantize import load_eval
from edgecnn.quantize.report import kl_divergence

# (WordNet ID, torchvision class index, class name)
KNOWN = [("n01440764", 0, "tench"), ("n02124075", 285, "Egyptian cat"),
         ("n07920052", 967, "espresso"), ("n15075141", 999, "toilet tissue")]


def test_synset_table_is_the_sorted_imagenet_1k_list():
    ids = list(imagenet_synsets())
    assert len(ids) == len(set(ids)) == 1000 and ids == sorted(ids)
    for wnid, index, name in KNOWN:
        assert imagenet_synsets()[wnid] == index and imagenet_labels()[index] == name
    assert synset_index("n02124075_Egyptian_cat.JPEG") == 285
    assert synset_index("n99999999_unknown.JPEG") is None and synset_index("cat.jpg") is None


@pytest.fixture
def synset_folder(tmp_path):
    photos = sample_photos(3)
    for (wnid, _, name), photo in zip(KNOWN, photos):
        photo.convert("RGB").save(tmp_path / f"{wnid}_{name.replace(' ', '_')}.JPEG", quality=90)
    return tmp_path


def test_a_flat_synset_folder_is_labelled_for_the_1000_classes(synset_folder):
    data = open_dataset(synset_folder)
    assert data.num_classes == 1000 and data.classes[285] == "Egyptian cat"
    test = data.split("test")
    assert sorted(test.labels.tolist()) == [0, 285, 967]
    assert [synset_index(p.name) for p in test.paths] == test.labels.tolist()


def test_a_stray_file_makes_it_a_plain_folder(synset_folder):
    Image.new("RGB", (8, 8)).save(synset_folder / "holiday.jpg")
    assert not is_synset_folder(synset_folder)


def test_quantize_eval_data_reads_synset_labels_for_1000_class_models_only(synset_folder):
    pre = Preprocess(res=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    ev = load_eval(synset_folder, pre, imagenet_labels(), 1000, n=10)
    assert ev.labels is not None and sorted(ev.labels.tolist()) == [0, 285, 967]
    assert load_eval(synset_folder, pre, None, 10, n=10).labels is None  # not ImageNet classes: unlabelled


def test_mcnemar_exact_values():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64)  # all 6 flips one way: 2 * 0.5^6
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    # over 1023 flips (a near-chance model on 10,000 images): 2.0 ** n overflowed, the row was lost
    assert mcnemar_p(700, 700) == 1.0 and 0 <= mcnemar_p(500, 700) < 1e-6


def test_paired_difference_counts_flips_and_brackets_the_difference():
    rng = np.random.default_rng(1)
    a = rng.random(500) < 0.8
    b = a.copy()
    b[np.flatnonzero(a)[:12]] = False  # b loses 12 images a got right ...
    b[np.flatnonzero(~a)[:2]] = True   # ... and gains 2
    d = paired_difference(a, b)
    assert (d.a_only, d.b_only, d.images) == (12, 2, 500)
    assert d.diff == pytest.approx(-2.0)  # (2 - 12) / 500 images, in points
    assert d.low < d.diff < d.high < 0 and d.p_value < 0.05
    assert paired_difference(a, b) == d  # seeded: the same interval every run
    same = paired_difference(a, a)
    assert (same.diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        paired_difference(a, b[:10])


def test_hits_round_trip_as_text_and_changes_print_with_their_interval():
    a = np.random.default_rng(2).random(1001) < 0.7  # not a multiple of 8: the padding is dropped
    text = pack_hits(a)
    assert isinstance(text, str) and len(text) < 1001 // 4
    assert np.array_equal(unpack_hits(text, 1001), a)
    assert change_text({"points": -0.25, "low": -0.61, "high": 0.1}) == "-0.25 [-0.61, +0.10]"
    assert change_text({"points": -0.25, "low": -0.61, "high": 0.1}, digits=1) == "-0.2 [-0.6, +0.1]"
    assert change_text(None) == "-"


def test_kl_divergence_of_logits():
    ref = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert kl_divergence(ref, ref) == pytest.approx(0.0, abs=1e-12)
    out = ref[:, ::-1].copy()
    p = np.exp(ref) / np.exp(ref).sum(1, keepdims=True)
    q = np.exp(out) / np.exp(out).sum(1, keepdims=True)
    assert kl_divergence(ref, out) == pytest.approx(np.mean(np.sum(p * np.log(p / q), 1)))
