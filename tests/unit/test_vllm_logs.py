"""vLLM's logging config: every record of the "vllm" logger to the file, the console each warning once."""
import json
import logging
import logging.config
import os

from gainrl.vllm_logs import CONFIG_ENV, send_vllm_logs_to


def test_records_go_to_the_file_and_each_warning_once_to_the_console(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    log_path = send_vllm_logs_to(str(tmp_path / "logs"))
    config_path = os.environ[CONFIG_ENV]
    assert log_path == str(tmp_path / "logs" / "vllm.rank0.log") and config_path.endswith("vllm.rank0.logging.json")
    logging.config.dictConfig(json.load(open(config_path)))  # what vLLM does with the file, at import and per engine
    logger = logging.getLogger("vllm.model_executor.layerwise")
    try:
        for _ in range(3):  # three pushes
            logger.warning("%s: Failed to load weights", "RotaryEmbedding")
            logger.info("Successfully reset prefix cache")
        logger.warning("another warning %d", 1)
        logger.warning("another warning %d", 2)  # the same template: once
    finally:
        for handler in logging.getLogger("vllm").handlers:
            handler.close()
        logging.getLogger("vllm").handlers.clear()
    console = capsys.readouterr().err.splitlines()
    assert console == [f"[vllm WARNING] RotaryEmbedding: Failed to load weights (repeats only in {log_path})",
                       f"[vllm WARNING] another warning 1 (repeats only in {log_path})"]
    text = open(log_path).read()
    assert text.count("Failed to load weights") == 3 and text.count("Successfully reset prefix cache") == 3
    assert text.count("another warning") == 2


def test_a_second_run_in_the_same_process_moves_the_logs_to_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    send_vllm_logs_to(str(tmp_path / "first"))
    assert send_vllm_logs_to(str(tmp_path / "second")) == str(tmp_path / "second" / "vllm.rank0.log")
    assert os.environ[CONFIG_ENV] == str(tmp_path / "second" / "vllm.rank0.logging.json")


def test_a_users_own_vllm_logging_config_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, "/etc/my-vllm-logging.json")
    assert send_vllm_logs_to(str(tmp_path / "logs")) == "/etc/my-vllm-logging.json"
    assert not (tmp_path / "logs").exists()
