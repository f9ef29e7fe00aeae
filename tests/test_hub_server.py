"""End-to-end tests of tests/hub_server.py with the real huggingface_hub / transformers / peft clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

try:
    from hub_server import LocalHub, local_hub  # noqa: F401  (tests/ on sys.path: no tests/__init__.py)
except ImportError:  # pragma: no cover - if tests/ ever becomes a package
    from tests.hub_server import LocalHub, local_hub  # noqa: F401

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _tiny_bert(num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


def _inputs():
    return {
        "input_ids": torch.tensor([[1, 5, 7, 9, 2], [1, 42, 17, 2, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]),
    }


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_bert")
    _tiny_bert().save_pretrained(path, safe_serialization=True)
    return path


def test_client_is_pointed_at_local_hub(local_hub):
    from huggingface_hub import HfApi, constants, hf_api, whoami

    assert constants.ENDPOINT == local_hub.endpoint
    assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(local_hub.endpoint + "/")
    assert HfApi().endpoint == local_hub.endpoint
    assert hf_api.api.endpoint == local_hub.endpoint
    assert whoami()["name"] == local_hub.user == "user"
    assert local_hub.token.startswith("hf_test_")


def test_create_repo(local_hub):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    url = api.create_repo("user/tiny", private=True)
    assert url.repo_id == "user/tiny"
    assert url.endpoint == local_hub.endpoint
    assert local_hub.repos["user/tiny"].private is True
    assert api.repo_exists("user/tiny")
    assert [s.rfilename for s in api.model_info("user/tiny").siblings] == [".gitattributes"]

    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_repo("user/tiny")
    assert exc_info.value.response.status_code == 409
    assert api.create_repo("user/tiny", exist_ok=True).repo_id == "user/tiny"

    # private repo is invisible without a token
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("user/tiny")

    # name without namespace -> token's user; dataset repos are separate
    assert api.create_repo("other", repo_type="dataset").repo_id == "user/other"
    assert "datasets/user/other" in local_hub.repos

    with pytest.raises(HfHubHTTPError) as exc_info:
        HfApi(token=False).create_repo("user/nope")
    assert exc_info.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_repo("someone-else/nope")
    assert exc_info.value.response.status_code == 403


def test_upload_folder_and_from_pretrained(local_hub, tiny_model_dir, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from transformers import AutoModelForSequenceClassification

    api = HfApi()
    api.create_repo("user/tiny")
    info = api.upload_folder(repo_id="user/tiny", folder_path=tiny_model_dir, commit_message="add model")
    assert info.oid == local_hub.repos["user/tiny"].sha

    repo = local_hub.repos["user/tiny"]
    files = repo.files()
    assert {"config.json", "model.safetensors", ".gitattributes"} <= set(files)
    assert files["model.safetensors"].lfs and not files["config.json"].lfs  # safetensors went through git-LFS
    assert not any("xet" in path for _, path, _ in local_hub.requests)
    assert any(path.endswith(".git/info/lfs/objects/batch") for _, path, _ in local_hub.requests)
    assert files["model.safetensors"].content == (tiny_model_dir / "model.safetensors").read_bytes()

    model_info = api.model_info("user/tiny", files_metadata=True)
    assert model_info.sha == repo.sha
    siblings = {s.rfilename: s for s in model_info.siblings}
    assert siblings["model.safetensors"].lfs.sha256 == files["model.safetensors"].sha256
    tree = {f.path: f for f in api.list_repo_tree("user/tiny", recursive=True)}
    assert tree["model.safetensors"].size == files["model.safetensors"].size

    reference = _tiny_bert().eval()
    loaded = AutoModelForSequenceClassification.from_pretrained("user/tiny").eval()
    ref_state, new_state = reference.state_dict(), loaded.state_dict()
    assert ref_state.keys() == new_state.keys()
    for key in ref_state:
        torch.testing.assert_close(new_state[key], ref_state[key], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**_inputs()).logits, reference(**_inputs()).logits, rtol=0, atol=0)

    config_path = hf_hub_download("user/tiny", "config.json")
    assert json.loads(Path(config_path).read_text())["hidden_size"] == 32
    assert f"snapshots/{repo.sha}/" in config_path.replace("\\", "/")

    local = snapshot_download("user/tiny", local_dir=tmp_path / "snap")
    assert (tmp_path / "snap" / "model.safetensors").read_bytes() == files["model.safetensors"].content
    assert local


def test_upload_without_token_is_401(local_hub, tiny_model_dir):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    HfApi().create_repo("user/tiny")
    with pytest.raises(HfHubHTTPError) as exc_info:
        HfApi(token=False).upload_folder(repo_id="user/tiny", folder_path=tiny_model_dir)
    assert exc_info.value.response.status_code == 401
    assert "must be authenticated" in str(exc_info.value)

    with pytest.raises(HfHubHTTPError) as exc_info:
        HfApi(token="hf_wrong").upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/tiny")
    assert exc_info.value.response.status_code == 401
    assert "Invalid credentials" in str(exc_info.value)
    assert set(local_hub.repos["user/tiny"].files()) == {".gitattributes"}


def test_second_commit_updates_file(local_hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi()
    api.create_repo("user/notes")
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="dir/notes.txt", repo_id="user/notes")
    api.upload_file(path_or_fileobj=b"keep", path_in_repo="other.txt", repo_id="user/notes")
    assert Path(hf_hub_download("user/notes", "dir/notes.txt")).read_text() == "v1"

    second = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="dir/notes.txt", repo_id="user/notes")
    assert second.oid != first.oid
    assert Path(hf_hub_download("user/notes", "dir/notes.txt")).read_text() == "version 2"
    # old revision still reachable by commit sha
    assert Path(hf_hub_download("user/notes", "dir/notes.txt", revision=first.oid)).read_text() == "v1"
    assert api.list_repo_files("user/notes") == [".gitattributes", "dir/notes.txt", "other.txt"]
    assert [c.title for c in api.list_repo_commits("user/notes")][:1] == ["Upload dir/notes.txt with huggingface_hub"]

    api.delete_file("other.txt", repo_id="user/notes")
    assert not api.file_exists("user/notes", "other.txt")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/notes", "other.txt")


def test_lora_adapter_push_and_load(local_hub, tiny_model_dir):
    peft = pytest.importorskip("peft")
    from huggingface_hub import HfApi
    from transformers import AutoModelForSequenceClassification

    api = HfApi()
    api.create_repo("user/tiny")
    api.upload_folder(repo_id="user/tiny", folder_path=tiny_model_dir)

    base = AutoModelForSequenceClassification.from_pretrained("user/tiny").eval()
    with torch.no_grad():
        base_logits = base(**_inputs()).logits
    lora = peft.get_peft_model(
        base, peft.LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"], r=4, lora_alpha=8)
    )
    torch.manual_seed(1)
    with torch.no_grad():  # lora_B is zero-initialised: make the adapter actually change the outputs
        for name, param in lora.named_parameters():
            if "lora_B" in name or "classifier" in name:
                param.add_(torch.randn_like(param) * 0.1)
    lora.eval()
    with torch.no_grad():
        expected = lora(**_inputs()).logits
    lora.push_to_hub("user/tiny-lora")
    files = local_hub.repos["user/tiny-lora"].files()
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    assert json.loads(files["adapter_config.json"].content)["base_model_name_or_path"] == "user/tiny"

    fresh_base = AutoModelForSequenceClassification.from_pretrained("user/tiny")
    reloaded = peft.PeftModel.from_pretrained(fresh_base, "user/tiny-lora").eval()
    with torch.no_grad():
        got = reloaded(**_inputs()).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.allclose(got, base_logits)  # the adapter really is applied


def test_regular_mode_and_plain_localhub(monkeypatch):
    """LocalHub without the fixture (explicit endpoint/token) and with lfs=False (everything inline base64)."""
    from huggingface_hub import HfApi, constants

    # tests/conftest.py turns HF_HUB_OFFLINE on for the whole session: without `patch_client`, turn it off here
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with LocalHub(lfs=False) as hub:
        api = HfApi(endpoint=hub.endpoint, token=hub.token)
        api.create_repo("user/plain")
        payload = bytes(range(256)) * 100
        api.upload_file(path_or_fileobj=payload, path_in_repo="weights.safetensors", repo_id="user/plain")
        f = hub.repos["user/plain"].files()["weights.safetensors"]
        assert f.content == payload and not f.lfs
        assert not hub.lfs_objects


def test_dataset_push_and_load(local_hub, tmp_path):
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import HfApi

    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]}).push_to_hub("user/pushed")
    files = local_hub.repo("user/pushed", repo_type="dataset").files()
    assert any(p.endswith(".parquet") and f.lfs for p, f in files.items())
    assert datasets.load_dataset("user/pushed", split="train")["text"] == ["a", "b", "c"]

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "train.csv").write_text("text,label\nhello,1\nbye,0\n")
    api = HfApi()
    api.create_repo("user/csv", repo_type="dataset")
    api.upload_folder(repo_id="user/csv", repo_type="dataset", folder_path=tmp_path / "csv", path_in_repo="data")
    assert datasets.load_dataset("user/csv", split="train")["label"] == [1, 0]


def test_patch_client_is_undone(tmp_path):
    from huggingface_hub import constants, hf_api

    before = (constants.ENDPOINT, constants.HF_HUB_CACHE, constants.HF_HUB_DISABLE_XET, hf_api.api.endpoint)
    with LocalHub() as hub, pytest.MonkeyPatch.context() as mp:
        hub.patch_client(mp, tmp_path)
        assert constants.ENDPOINT == hub.endpoint == hf_api.api.endpoint
        assert constants.HF_HUB_CACHE.startswith(str(tmp_path))
    after = (constants.ENDPOINT, constants.HF_HUB_CACHE, constants.HF_HUB_DISABLE_XET, hf_api.api.endpoint)
    assert after == before
