import pytest

from conftest import BPE_DIR, needs
from gpt2_jax.tokenizer import END_OF_TEXT_ID, get_tokenizer


@needs(BPE_DIR)
def test_local_bpe_files_give_gpt2_ids():
    tok = get_tokenizer(BPE_DIR)
    assert tok.n_vocab == 50257
    assert tok.encode("<|endoftext|>", allowed_special="all") == [END_OF_TEXT_ID] == [50256]
    assert tok.encode("Hello, world") == [15496, 11, 995]
    assert tok.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    text = "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005!!  \u00a3100 ok?"
    assert tok.decode(tok.encode(text)) == text


def test_missing_files_and_no_network_explain(tmp_path, monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("no route to host")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(RuntimeError, match=f"no encoder.json \\+ vocab.bpe in {tmp_path}"):
        get_tokenizer(tmp_path)
