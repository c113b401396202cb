import collections
import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchyard.trainer import registry
from torchyard.trainer.config import ConfigError
from torchyard.trainer.registry import Registry, import_custom_modules


class TinyNet:
    def __init__(self, width: int = 4, depth: int = 1) -> None:
        self.width = width
        self.depth = depth


class TinyCNN(TinyNet):
    pass


@pytest.fixture
def models() -> Registry:
    reg = Registry("model")
    reg.register(TinyNet)
    reg.register(TinyCNN)
    return reg


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Run in an empty tmp_path; restore sys.path, MODELS and the modules imported from there afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(registry.MODELS, "_entries", dict(registry.MODELS._entries))
    importlib.invalidate_caches()
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


# ---- register / get / build --------------------------------------------------------------------------


def test_register_as_decorator_with_and_without_name() -> None:
    reg = Registry("hook")

    @reg.register()
    class A:
        pass

    @reg.register(name="renamed")
    class B:
        pass

    assert reg.get("A") is A and reg.get("renamed") is B
    assert "B" not in reg and "renamed" in reg
    assert reg.names() == ["A", "renamed"]


def test_build_passes_config_keys_as_keyword_arguments(models: Registry) -> None:
    net = models.build({"type": "TinyNet", "width": 8})

    assert isinstance(net, TinyNet) and (net.width, net.depth) == (8, 1)


def test_build_default_args_do_not_override_config(models: Registry) -> None:
    net = models.build({"type": "TinyNet", "width": 8}, width=2, depth=3)

    assert (net.width, net.depth) == (8, 3)


def test_build_does_not_modify_the_config(models: Registry) -> None:
    cfg = {"type": "TinyNet", "width": 8}

    models.build(cfg, depth=2)

    assert cfg == {"type": "TinyNet", "width": 8}


def test_build_accepts_the_class_itself_as_type(models: Registry) -> None:
    class Unregistered:
        def __init__(self, x: int) -> None:
            self.x = x

    built = models.build({"type": Unregistered, "x": 3})

    assert isinstance(built, Unregistered) and built.x == 3


def test_build_accepts_a_dotted_import_path(models: Registry) -> None:
    counter = models.build({"type": "collections.Counter", "a": 2})

    assert counter == collections.Counter(a=2)


def test_dotted_path_to_a_missing_module_is_a_config_error(models: Registry) -> None:
    with pytest.raises(ConfigError, match=r"model\.type: cannot import module 'no_such_pkg\.models'"):
        models.build({"type": "no_such_pkg.models.Net"}, where="model")


def test_dotted_path_to_a_missing_attribute_is_a_config_error(models: Registry) -> None:
    with pytest.raises(ConfigError, match=r"module 'collections' has no attribute 'Countr'"):
        models.get("collections.Countr")


def test_unknown_name_lists_registered_names_and_nearest_match(models: Registry) -> None:
    with pytest.raises(ConfigError) as err:
        models.build({"type": "TinyCN"}, where="model")

    message = str(err.value)
    assert message.startswith("model.type: 'TinyCN' is not a registered model.")
    assert "Did you mean 'TinyCNN'?" in message
    assert "Registered: TinyCNN, TinyNet." in message
    assert "custom_imports" in message


def test_unknown_name_far_from_everything_has_no_suggestion(models: Registry) -> None:
    with pytest.raises(ConfigError, match="Registered: TinyCNN, TinyNet") as err:
        models.get("Transformer")

    assert "Did you mean" not in str(err.value)


def test_wrong_keyword_argument_names_the_config_key(models: Registry) -> None:
    with pytest.raises(ConfigError, match=r"^model: wrong arguments for TinyNet: .*'widht'"):
        models.build({"type": "TinyNet", "widht": 8}, where="model")


def test_missing_required_argument_names_the_config_key() -> None:
    reg = Registry("metric")

    @reg.register()
    def make_metric(topk: int) -> int:
        return topk

    with pytest.raises(ConfigError, match=r"^val_evaluator\[0\]: wrong arguments for make_metric: .*topk"):
        reg.build({"type": "make_metric"}, where="val_evaluator[0]")


def test_build_without_type_is_a_config_error(models: Registry) -> None:
    with pytest.raises(ConfigError, match="model: expected a dict with a 'type' key"):
        models.build({"width": 3}, where="model")


def test_type_of_the_wrong_kind_is_a_config_error(models: Registry) -> None:
    with pytest.raises(ConfigError, match=r"model\.type: expected a model name"):
        models.build({"type": 42}, where="model")


def test_registering_another_object_under_a_taken_name_fails(models: Registry) -> None:
    class TinyNet:  # same name, different class
        pass

    with pytest.raises(KeyError, match="'TinyNet' is already registered in model"):
        models.register(TinyNet)
    assert models.get("TinyNet") is not TinyNet


def test_registering_the_same_object_twice_is_harmless(models: Registry) -> None:
    models.register(TinyNet)

    assert models.get("TinyNet") is TinyNet


def test_force_replaces_a_registration(models: Registry) -> None:
    class TinyNet:
        pass

    models.register(TinyNet, force=True)

    assert models.get("TinyNet") is TinyNet


# ---- custom_imports ----------------------------------------------------------------------------------


CUSTOM_MODULE = textwrap.dedent("""
    from torch import nn
    from torchyard.trainer.registry import MODELS


    @MODELS.register()
    class {name}(nn.Module):
        def __init__(self, hidden: int = 3) -> None:
            super().__init__()
            self.fc = nn.Linear(2, hidden)
""")


def test_import_custom_modules_from_the_working_directory_registers_a_model(clean_imports: Path) -> None:
    (clean_imports / "my_models_cwd.py").write_text(CUSTOM_MODULE.format(name="CwdNet"))
    sys.path[:] = [p for p in sys.path if p not in ("", str(clean_imports))]  # as under a console script

    import_custom_modules({"imports": ["my_models_cwd"], "allow_failed_imports": False})

    model = registry.MODELS.build({"type": "CwdNet", "hidden": 5}, where="model")
    assert model.fc.out_features == 5


def test_import_custom_modules_accepts_a_single_string_and_packages(clean_imports: Path) -> None:
    package = clean_imports / "my_pkg_str"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(CUSTOM_MODULE.format(name="PkgNet"))

    import_custom_modules({"imports": "my_pkg_str.models"})

    assert "PkgNet" in registry.MODELS


def test_import_custom_modules_with_nothing_to_import_is_a_no_op(clean_imports: Path) -> None:
    before = list(sys.path)

    import_custom_modules(None)
    import_custom_modules({})

    assert sys.path == before


def test_missing_custom_module_is_a_clear_config_error(clean_imports: Path) -> None:
    expected = r"could not import 'no_such_custom_module'.*importable from the working directory"
    with pytest.raises(ConfigError, match=expected) as err:
        import_custom_modules({"imports": ["no_such_custom_module"]})

    assert "No module named 'no_such_custom_module'" in str(err.value)


def test_missing_custom_module_with_allow_failed_imports_only_warns(
    clean_imports: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clean_imports / "good_module_allow.py").write_text(CUSTOM_MODULE.format(name="AllowedNet"))

    import_custom_modules({"imports": ["no_such_custom_module", "good_module_allow"],
                           "allow_failed_imports": True})

    assert "warning: custom_imports: could not import 'no_such_custom_module'" in capsys.readouterr().err
    assert "AllowedNet" in registry.MODELS  # the modules after the failed one are still imported


class Annotated:
    def __init__(self, width: int = 4, eps: float | None = None, name: str = "x", flag: bool = False,
                 sizes: list[int] | None = None) -> None:
        self.width, self.eps, self.name, self.flag, self.sizes = width, eps, name, flag, sizes


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"width": "abc"}, r"^model\.width: expected int, got 'abc' \(str\)$"),
    ({"width": 2.5}, r"^model\.width: expected int, got 2\.5 \(float\)$"),
    ({"width": True}, r"^model\.width: expected int, got True \(bool\)$"),
    ({"eps": "small"}, r"^model\.eps: expected None or float or int, got 'small' \(str\)$"),
    ({"flag": "yes"}, r"^model\.flag: expected bool, got 'yes' \(str\)$"),
])
def test_a_value_of_the_wrong_type_names_the_key_the_value_and_the_type(kwargs: dict, message: str) -> None:
    reg = Registry("model")
    reg.register(Annotated)

    with pytest.raises(ConfigError, match=message):
        reg.build({"type": "Annotated", **kwargs}, where="model")


def test_values_that_fit_their_annotations_build() -> None:
    reg = Registry("model")
    reg.register(Annotated)

    built = reg.build({"type": "Annotated", "width": 3, "eps": 1, "sizes": ["not", "checked"]}, where="model")

    assert (built.width, built.eps, built.sizes) == (3, 1, ["not", "checked"])



def test_a_type_only_an_openmmlab_codebase_has_names_the_scope(models: Registry, monkeypatch) -> None:
    monkeypatch.setattr(registry, "_default_scope", None)
    registry.set_default_scope("mmseg")

    with pytest.raises(ConfigError, match=r"'EncoderDecoder' is not a registered model\..*"
                                          r"default_scope='mmseg': a type only mmseg provides"):
        models.get("EncoderDecoder", where="model.type")
    with pytest.raises(ConfigError, match=r"model.type: 'mmseg.EncoderDecoder' is 'EncoderDecoder' of scope "
                                          r"'mmseg', which is not installed"):
        models.get("mmseg.EncoderDecoder", where="model.type")
    assert models.get("TinyNet") is TinyNet
