"""Damaged weight files are named from their headers, before anything loads them."""
import json
import os
import shutil

import pytest

from gainrl.models import check_weight_files


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_an_intact_folder_passes(model_copy):
    check_weight_files(str(model_copy))
    check_weight_files("Qwen/Qwen2.5-7B")  # a hub name: nothing local to check


@pytest.mark.parametrize("cut", [4, 100, -1])
def test_a_cut_safetensors_file_is_named(model_copy, cut):
    weights = model_copy / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, cut if cut > 0 else size + cut)
    with pytest.raises(ValueError, match=rf"model.path: {weights} is \d+ bytes.*; copy or export the model again"):
        check_weight_files(str(model_copy))


def test_a_damaged_header_a_missing_shard_and_a_cut_bin_are_named(model_copy):
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:12] = b"\xff\xff\xff\xff"
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="has a damaged header"):
        check_weight_files(str(model_copy), key="model.path")
    weights.unlink()
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ValueError, match=r"model-00001-of-00002.safetensors is missing \(.*index.json names it, and 1 "):
        check_weight_files(str(model_copy))
    (model_copy / "model.safetensors.index.json").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="pytorch_model.bin is no complete torch archive"):
        check_weight_files(str(model_copy))


def test_a_legacy_pickle_bin_is_not_refused(model_copy):
    (model_copy / "pytorch_model.bin").write_bytes(b"\x80\x02 a torch.save of before the zip format")
    check_weight_files(str(model_copy))  # not a zip, so not read as a cut one
