"""rmu.config: per-topic lists, the update_layers default, --forget parsing and YAML loading."""

from __future__ import annotations

import pytest

from rmu.config import ConfigError, load_yaml, make_config, parse_topic_sources


def config(**values):
    return make_config(dict(model="m", forget={"bio": "b.jsonl", "cyber": "c.jsonl"}, retain=["r.txt"],
                            device="cpu") | values)


def test_per_topic_settings_broadcast_or_take_one_value_per_topic():
    broadcast = config(steering_coeff=6.5, beta=5.0, alpha=100.0, max_len=64)
    assert broadcast.steering_coeff == [6.5, 6.5] and broadcast.beta == [5.0, 5.0]
    assert broadcast.alpha == [100.0, 100.0] and broadcast.max_len == [64, 64]
    per_topic = config(steering_coeff="6.5,20", alpha=[1200, 1000], max_len=[512])
    assert per_topic.steering_coeff == [6.5, 20.0] and per_topic.alpha == [1200.0, 1000.0]
    assert per_topic.max_len == [512, 512]  # one value in a list is broadcast too
    with pytest.raises(ConfigError, match=r"--alpha has 3 values but there are 2 forget topics \(bio, cyber\)"):
        config(alpha="1,2,3")


def test_retain_is_one_for_all_topics_or_one_per_topic():
    assert config().retain_for(1) == "r.txt"
    assert config(retain="r1.txt,r2.txt").retain_for(1) == "r2.txt"
    with pytest.raises(ConfigError, match="--retain has 3 corpora for 2 forget topics"):
        config(retain=["a", "b", "c"])


@pytest.mark.parametrize(("layer", "expected"), [(7, [5, 6, 7]), (1, [0, 1]), (0, [0])])
def test_update_layers_default_to_the_steered_layer_and_the_two_below(layer, expected):
    assert config(layer=layer).update_layers == expected


def test_update_layers_given_are_sorted_and_must_lie_at_or_below_the_layer():
    assert config(layer=4, update_layers="4,2,2").update_layers == [2, 4]
    with pytest.raises(ConfigError, match=r"--update-layers \[5\] must lie in 0..4"):
        config(layer=4, update_layers=[5])


def test_parse_topic_sources():
    assert parse_topic_sources(["bio=data/a.jsonl", "data/cyber-forget.txt", "hf:org/name:cfg:train"]) == {
        "bio": "data/a.jsonl", "cyber-forget": "data/cyber-forget.txt", "org/name": "hf:org/name:cfg:train"}
    assert parse_topic_sources([" x = a=b.txt"]) == {"x": "a=b.txt"}  # only the first = names the topic
    with pytest.raises(ConfigError, match="forget topic 'a' is given twice"):
        parse_topic_sources(["a=x.txt", "a.txt"])
    with pytest.raises(ConfigError, match="the topic name is empty"):
        parse_topic_sources([" =x.txt"])
    with pytest.raises(ConfigError, match="no corpus after the topic name"):
        parse_topic_sources(["bio="])
    assert make_config(dict(model="m", forget="a.txt", retain="r.txt", device="cpu")).topics == ["a"]


def test_load_yaml_reads_dashed_keys_into_a_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nforget:\n  bio: b.jsonl\nretain: [r.txt]\nsteering-coeff: 20\nupdate-layers: 1,2\n"
                    "layer: 2\ndevice: cpu\n")
    values = load_yaml(path)
    assert values["steering_coeff"] == 20 and values["update_layers"] == "1,2"
    loaded = make_config(values)
    assert loaded.steering_coeff == [20.0] and loaded.update_layers == [1, 2] and loaded.forget == {"bio": "b.jsonl"}


def test_load_yaml_refuses_what_is_not_a_mapping_of_plain_values(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    (tmp_path / "code.yaml").write_text("model: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="refused the tag !!python/object"):
        load_yaml(tmp_path / "code.yaml")
    assert load_yaml(_empty(tmp_path)) == {}
    with pytest.raises(ConfigError, match="true/false value, not a number"):
        make_config(load_yaml(_empty(tmp_path)) | dict(model="m", forget="a.txt", retain="r", lr=True, device="cpu"))


def _empty(folder):
    path = folder / "empty.yaml"
    path.write_text("")
    return path
