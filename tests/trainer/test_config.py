"""Tests for torchyard.trainer.config: loading with _base_, merging, --cfg-options, dump, ConfigDict."""

import copy
import json
import math
import pickle
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import yaml

from torchyard.trainer.config import (
    Config,
    ConfigDict,
    ConfigError,
    merge,
    parse_cfg_options,
    parse_value,
    to_primitive,
)


def write(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under root; return the path of the last file."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def render(suffix: str, data: dict) -> str:
    if suffix == ".py":
        return "".join(f"{key} = {value!r}\n" for key, value in data.items())
    if suffix == ".json":
        return json.dumps(data)
    return yaml.safe_dump(data)


# --- inheritance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("child_suffix", [".py", ".yaml", ".json"])
@pytest.mark.parametrize("base_suffix", [".py", ".yaml", ".yml", ".json"])
def test_any_format_inherits_from_any_format(tmp_path, base_suffix, child_suffix):
    base = {"model": {"type": "MLP", "width": 4, "depth": 2}, "optim": {"lr": 0.1}}
    child = {"_base_": f"base{base_suffix}", "model": {"width": 8}}
    path = write(tmp_path, {f"base{base_suffix}": render(base_suffix, base),
                            f"child{child_suffix}": render(child_suffix, child)})

    cfg = Config.fromfile(path)

    assert cfg.to_dict() == {"model": {"type": "MLP", "width": 8, "depth": 2}, "optim": {"lr": 0.1}}
    assert cfg.filename == str(path)


def test_chain_of_three_formats(tmp_path):
    path = write(tmp_path, {
        "base.json": '{"a": 1, "b": {"x": 1, "y": 1}}',
        "mid.yaml": "_base_: base.json\nb: {y: 2}\nc: mid\n",
        "child.py": "_base_ = 'mid.yaml'\nb = dict(z=3)\n",
    })
    assert Config.fromfile(path).to_dict() == {"a": 1, "b": {"x": 1, "y": 2, "z": 3}, "c": "mid"}


def test_list_of_bases_merges_in_order_then_the_child(tmp_path):
    path = write(tmp_path, {
        "a.py": "x = 1\nshared = dict(a=1, who='a')\n",
        "b.yaml": "x: 2\ny: 2\nshared: {b: 2, who: b}\n",
        "child.py": "_base_ = ['a.py', 'b.yaml']\ny = 3\n",
    })
    assert Config.fromfile(path).to_dict() == {"x": 2, "y": 3, "shared": {"a": 1, "who": "b", "b": 2}}


def test_base_paths_are_relative_to_the_file_that_names_them(tmp_path, monkeypatch):
    path = write(tmp_path, {
        "configs/_base_/models/mlp.py": "model = dict(type='MLP', width=4)\n",
        "configs/_base_/default.py": "_base_ = 'models/mlp.py'\nseed = 0\n",
        "configs/exp/deep/run.py": "_base_ = ['../../_base_/default.py']\nmodel = dict(width=16)\n",
    })
    monkeypatch.chdir(write(tmp_path, {"elsewhere/x.txt": ""}).parent)

    cfg = Config.fromfile(path)

    assert cfg.to_dict() == {"model": {"type": "MLP", "width": 16}, "seed": 0}


def test_diamond_inheritance_is_not_a_cycle(tmp_path):
    path = write(tmp_path, {
        "root.py": "a = dict(x=1)\n",
        "left.py": "_base_ = 'root.py'\nleft = 1\n",
        "right.py": "_base_ = 'root.py'\nright = 1\n",
        "child.py": "_base_ = ['left.py', 'right.py']\n",
    })
    assert Config.fromfile(path).to_dict() == {"a": {"x": 1}, "left": 1, "right": 1}


def test_deep_merge_keeps_keys_the_child_does_not_name(tmp_path):
    path = write(tmp_path, {
        "base.py": "optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9), clip=dict(m=1))\n",
        "child.py": "_base_ = 'base.py'\noptim_wrapper = dict(optimizer=dict(lr=0.05))\n",
    })
    assert Config.fromfile(path).optim_wrapper.to_dict() == {
        "optimizer": {"type": "SGD", "lr": 0.05, "momentum": 0.9}, "clip": {"m": 1}}


def test_delete_replaces_a_dict_at_any_depth(tmp_path):
    path = write(tmp_path, {
        "base.py": "model = dict(type='A', a=1, head=dict(type='H', x=1))\nsched = dict(type='Step', s=3)\n",
        "child.py": """\
            _base_ = 'base.py'
            model = dict(head=dict(_delete_=True, type='G'))
            sched = dict(_delete_=True, type='Cosine')
            new = dict(_delete_=True, k=1)
            """,
    })
    cfg = Config.fromfile(path)
    assert cfg.to_dict() == {
        "model": {"type": "A", "a": 1, "head": {"type": "G"}},
        "sched": {"type": "Cosine"},
        "new": {"k": 1},
    }


def test_lists_are_replaced_not_merged(tmp_path):
    path = write(tmp_path, {
        "base.yaml": "layers: [{width: 1}, {width: 2}, {width: 3}]\nmilestones: [1, 2, 3]\n",
        "child.py": "_base_ = 'base.yaml'\nlayers = [dict(depth=9)]\nmilestones = [7]\n",
    })
    cfg = Config.fromfile(path)
    assert cfg.layers == [{"depth": 9}]
    assert cfg.milestones == [7]


def test_merge_leaves_its_inputs_unchanged():
    base = {"a": {"x": 1}, "b": [1]}
    child = {"a": {"_delete_": True, "y": 2}, "c": 3}
    before = copy.deepcopy((base, child))

    assert merge(base, child) == {"a": {"y": 2}, "b": [1], "c": 3}
    assert (base, child) == before


def test_empty_yaml_is_an_empty_config(tmp_path):
    assert Config.fromfile(write(tmp_path, {"empty.yaml": ""})) == {}


def test_python_config_keeps_values_but_not_imports(tmp_path):
    path = write(tmp_path, {"cfg.py": """\
        import os.path as osp
        from collections import OrderedDict

        def helper():
            return 3

        _private = 1
        work_dir = osp.join('runs', 'x')
        model = dict(type=OrderedDict, depth=helper())
        """})
    cfg = Config.fromfile(path)
    assert cfg.to_dict() == {"_private": 1, "work_dir": "runs/x", "model": {"type": OrderedDict, "depth": 3}}


# --- --cfg-options -----------------------------------------------------------------------------------------


def test_parse_cfg_options_every_documented_form():
    options = ["a.b=1", "c=[1,2]", "d=(1,2)", "e=True", "f=None", "g=str", "h=1,2"]
    assert parse_cfg_options(options) == {
        "a.b": 1, "c": [1, 2], "d": (1, 2), "e": True, "f": None, "g": "str", "h": [1, 2]}


def test_parse_cfg_options_splits_at_the_first_equals_sign_and_strips_the_key():
    assert parse_cfg_options([" a.b =x=y", "c="]) == {"a.b": "x=y", "c": ""}


@pytest.mark.parametrize(("raw", "expected"), [
    ("0", 0),
    ("-3", -3),
    ("0.5", 0.5),
    ("1e-3", 1e-3),
    ("-2.5E2", -250.0),
    ("1_000", 1000),
    ("False", False),
    ("true", True),
    ("null", None),
    ("None", None),
    ("SGD", "SGD"),
    ("data/train.pkl", "data/train.pkl"),
    ("a b", "a b"),
    ("'a,b'", "a,b"),
    ('"1"', "1"),
    ("'True'", "True"),
    ("'[1]'", "[1]"),
    ("1,", [1]),
    ("1, -2 ,3.5", [1, -2, 3.5]),
    ("[]", []),
    ("( )", ()),
    ("(1,)", (1,)),
    ("[1,2,]", [1, 2]),
    ("[1,[2,(3,4)]]", [1, [2, (3, 4)]]),
    ("[ 1 , [ 2, 3 ] , 4 ]", [1, [2, 3], 4]),
    ("['a', \"b c\", d]", ["a", "b c", "d"]),
    ("[(1, 'x'), (-2, 'y')]", [(1, "x"), (-2, "y")]),
    ("[1e-3,-1]", [0.001, -1]),
    ("[True,None,none]", [True, None, None]),
])
def test_parse_value(raw, expected):
    value = parse_value(raw)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_value_inf_is_a_float():
    assert math.isinf(parse_value("inf"))


@pytest.mark.parametrize(("option", "says"), [
    ("no_equals_sign", "expected KEY=VALUE"),
    ("=1", "empty"),
    ("a..b=1", "empty part"),
    ("a.=1", "empty part"),
    ("c=[1,2", "unbalanced brackets"),
    ("c=[[1,2]", "unbalanced brackets"),
    ("c=(1,2]", "expected ')'"),
    ("c=[1,2]]", "unexpected ']' at position 5"),
    ("c=1,2)", "unexpected ')'"),
    ("c='abc", "unterminated quote"),
    ("c=foo(1)", "unexpected '('"),
    ("c='a'b", "unexpected 'b'"),
])
def test_parse_cfg_options_rejects_bad_syntax(option, says):
    with pytest.raises(ConfigError, match="cfg-options") as err:
        parse_cfg_options([option])
    assert says in str(err.value)
    assert repr(option) in str(err.value)


@pytest.fixture
def layered(tmp_path) -> Path:
    return write(tmp_path, {"cfg.py": """\
        model = dict(type='MLP', layers=[dict(width=1), dict(width=2)], shape=(3, 4), act=None)
        sizes = [1, 2, 3]
        """})


def test_cfg_options_reach_nested_keys_and_list_items(layered):
    cfg = Config.fromfile(layered, cfg_options=[
        "model.type=CNN", "model.layers.1.width=8", "model.layers.-2.width=5", "sizes.0=9", "sizes.-1=[7]",
        "model.shape=(5,6)",
    ])
    assert cfg.model.to_dict() == {
        "type": "CNN", "layers": [{"width": 5}, {"width": 8}], "shape": (5, 6), "act": None}
    assert cfg.sizes == [9, 2, [7]]


def test_cfg_options_create_missing_intermediate_keys(layered):
    cfg = Config.fromfile(layered, cfg_options=["new.deep.key=1", "model.act.type=ReLU"])
    assert cfg.new.deep.key == 1
    assert isinstance(cfg.new.deep, ConfigDict)
    assert cfg.model.act.to_dict() == {"type": "ReLU"}


def test_cfg_options_as_a_dict_wrap_dict_values(layered):
    cfg = Config.fromfile(layered, cfg_options={"model.head": {"type": "Linear"}, "model.layers.0": {"d": 1}})
    assert cfg.model.head.type == "Linear"
    assert cfg.model.layers[0].d == 1


@pytest.mark.parametrize(("option", "says"), [
    ("model.type.0=x", "model.type is str 'MLP', so it has no key '0'"),
    ("sizes.1.x=1", "sizes.1 is int 2, so it has no key 'x'"),
    ("model.layers.first.width=1", "model.layers is a list; index it with a number, not 'first'"),
    ("model.layers.--1=1", "model.layers is a list; index it with a number, not '--1'"),
    ("model.layers.2.width=1", "index 2 is out of range for model.layers, which has 2 items"),
    ("sizes.-4=1", "index -4 is out of range for sizes, which has 3 items"),
    ("model.shape.0=1", "model.shape is a tuple; replace it whole"),
])
def test_cfg_options_that_do_not_fit_the_config(layered, option, says):
    with pytest.raises(ConfigError) as err:
        Config.fromfile(layered, cfg_options=[option])
    assert f"--cfg-options {option.partition('=')[0]}: {says}" in str(err.value)


# --- loading errors -----------------------------------------------------------------------------------------


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        Config.fromfile(path)
    return str(err.value)


def test_missing_config_file(tmp_path):
    message = load_error(tmp_path / "nope.py")
    assert str(tmp_path / "nope.py") in message
    assert "does not exist" in message


def test_missing_base_names_the_including_file(tmp_path):
    path = write(tmp_path, {"sub/child.py": "_base_ = ['../gone.yaml']\n"})
    message = load_error(path)
    assert f"{tmp_path / 'gone.yaml'} (a _base_ of {path}) does not exist" in message


@pytest.mark.parametrize("files", [
    {"a.py": "_base_ = 'a.py'\n"},
    {"a.py": "_base_ = 'b.yaml'\n", "b.yaml": "_base_: c.json\n", "c.json": '{"_base_": "a.py"}'},
])
def test_cyclic_base(tmp_path, files):
    write(tmp_path, files)
    message = load_error(tmp_path / "a.py")
    assert "inherits from itself" in message
    assert all(str(tmp_path / name) in message for name in files)


def test_python_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, {"bad.py": "a = 1\nb = 2\nc = = 3\n"})
    message = load_error(path)
    assert f"config {path}, line 3:" in message


def test_python_config_that_raises_names_file_line_and_error(tmp_path):
    path = write(tmp_path, {"bad.py": "a = 1\n\ndef f():\n    return 1 / 0\n\nb = f()\n"})
    message = load_error(path)
    assert f"config {path}, line 4, raised ZeroDivisionError: division by zero" in message


def test_error_in_a_base_names_the_including_file(tmp_path):
    write(tmp_path, {"base.py": "x = undefined_name\n"})
    child = write(tmp_path, {"child.py": "_base_ = 'base.py'\n"})
    message = load_error(child)
    assert f"{tmp_path / 'base.py'} (a _base_ of {child}), line 1, raised NameError" in message


@pytest.mark.parametrize(("name", "text", "says"), [
    ("list.yaml", "- a\n- b\n", "must hold a mapping of keys, not a list"),
    ("scalar.json", "3", "must hold a mapping of keys, not a int"),
    ("broken.yaml", "a: [1, 2\n", "is not valid YAML"),
    ("broken.json", '{"a": 1,}', "is not valid JSON"),
    ("cfg.toml", "a = 1\n", "must end in one of .py, .yaml, .yml, .json"),
    ("bad_base.py", "_base_ = 3\n", "_base_ must be a file path or a list of file paths, got 3"),
])
def test_bad_files_say_what_and_where(tmp_path, name, text, says):
    path = write(tmp_path, {name: text})
    message = load_error(path)
    assert says in message
    assert str(path) in message


def test_wrong_suffix_in_a_base(tmp_path):
    write(tmp_path, {"base.txt": "a = 1\n"})
    child = write(tmp_path, {"child.yaml": "_base_: base.txt\n"})
    assert f"(a _base_ of {child}) must end in one of" in load_error(child)


# --- dump ---------------------------------------------------------------------------------------------------


def test_classes_and_functions_dump_as_dotted_paths_and_read_back(tmp_path):
    path = write(tmp_path, {"cfg.py": """\
        import json
        from collections import OrderedDict

        model = dict(type=OrderedDict, loss=dict(type=json.dumps), pool=len,
                     heads=[dict(type=json.JSONDecoder)])
        """})
    cfg = Config.fromfile(path)

    dumped = Config.fromfile(cfg.dump(tmp_path / "out" / "dumped.py"))

    assert dumped.model.to_dict() == {
        "type": "collections.OrderedDict",
        "loss": {"type": "json.dumps"},
        "pool": "builtins.len",
        "heads": [{"type": "json.decoder.JSONDecoder"}],
    }
    assert dumped.to_dict() == to_primitive(cfg.to_dict())


def test_dump_of_a_merged_config_reads_back_without_its_bases(tmp_path):
    path = write(tmp_path, {
        "base.yaml": "model: {type: MLP, dims: [1, 2]}\nscale: .inf\n",
        "child.py": """\
            _base_ = 'base.yaml'
            model = dict(dropout=0.1, shape=(3, (4, 5)), name='it\\'s "quoted" ünïcode')
            flags = dict(amp=False, resume=None)
            long = list(range(200))
            text = 'x' * 300
            """,
    })
    cfg = Config.fromfile(path, cfg_options=["model.dims.0=-1"])
    out = cfg.dump(tmp_path / "elsewhere" / "config.py")
    assert "_base_" not in out.read_text(encoding="utf-8")

    dumped = Config.fromfile(out)

    assert dumped.to_dict() == cfg.to_dict()
    assert dumped.model.shape == (3, (4, 5))
    assert dumped.pretty_text == cfg.pretty_text


def test_dump_rejects_a_top_level_key_python_cannot_name(tmp_path):
    cfg = Config.fromfile(write(tmp_path, {"cfg.yaml": "lr-scale: 1\n"}))
    with pytest.raises(ConfigError, match="top-level key 'lr-scale' is not a Python name"):
        cfg.dump(tmp_path / "out.py")


# --- ConfigDict and Config objects --------------------------------------------------------------------------


def test_config_dict_reads_and_writes_attributes_recursively():
    cfg = ConfigDict(model=dict(layers=[dict(width=1)], pair=(dict(a=1), 2)))
    assert cfg.model.layers[0].width == 1
    assert cfg.model.pair[0].a == 1

    cfg.model.head = {"type": "Linear"}
    cfg["optim"] = {"lr": 0.1}
    del cfg.model.pair

    assert cfg.model.head.type == "Linear"
    assert cfg.optim.lr == 0.1
    assert "pair" not in cfg.model
    plain = cfg.to_dict()
    assert type(plain["model"]) is dict and type(plain["model"]["layers"][0]) is dict


def test_missing_attribute_lists_the_keys():
    cfg = ConfigDict(model=1, optim=2)
    with pytest.raises(AttributeError, match=r"config has no key 'modle'; it has: model, optim"):
        _ = cfg.modle
    assert not hasattr(ConfigDict(), "x")
    assert not hasattr(ConfigDict({1: "int key", "b": 2}), "x")


def test_deepcopy_copies_everything_and_keeps_the_filename(layered):
    cfg = Config.fromfile(layered)
    clone = copy.deepcopy(cfg)
    clone.model.layers[0].width = 99

    assert type(clone) is Config
    assert clone.filename == cfg.filename
    assert cfg.model.layers[0].width == 1
    assert isinstance(clone.model.layers[1], ConfigDict)
    plain = copy.deepcopy(ConfigDict(cfg))
    assert type(plain) is ConfigDict
    assert plain == cfg and plain.model is not cfg.model


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_pickle_round_trip(layered, protocol):
    cfg = Config.fromfile(layered)
    clone = pickle.loads(pickle.dumps(cfg, protocol))
    assert type(clone) is Config
    assert clone == cfg
    assert clone.filename == cfg.filename
    assert isinstance(clone.model.layers[0], ConfigDict)
    inner = pickle.loads(pickle.dumps(cfg.model, protocol))
    assert type(inner) is ConfigDict and inner == cfg.model


def test_config_from_a_dict_has_no_filename():
    cfg = Config({"a": {"b": 1}})
    assert cfg.filename is None
    assert cfg.a.b == 1


def test_importing_config_does_not_import_torch():
    code = "import sys, torchyard.trainer.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            timeout=60)
    assert result.stdout.strip() == "False"
