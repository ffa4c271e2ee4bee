"""The dist tests' shared inputs: the tests' recipe's tiny model, its warm start and data, built once per
session (about 40 s) and copied into each test's folder, instead of built again by each module's first run."""
import shutil

import pytest

from gainrl.config import TrainRunConfig, load_config
from gainrl.inputs import ensure_inputs
from tests.launch import DEMO, demo_overrides


@pytest.fixture(scope="session")
def built_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("built_inputs")
    ensure_inputs(load_config(["--config", DEMO, *demo_overrides(folder)], TrainRunConfig))
    return folder


@pytest.fixture
def copy_inputs(built_inputs):
    """copy_inputs(folder): the built inputs copied into `folder` (created if needed); returns it. A run
    pointed at them by tests.launch.demo_overrides(folder) finds its warm start cached."""
    def copy(folder):
        shutil.copytree(built_inputs, folder, dirs_exist_ok=True)
        return folder
    return copy
