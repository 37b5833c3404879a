"""Command-line flags come from the constructors: every parameter is a flag with the constructor's default, upstream
spellings are aliases, and the parsed flags build the same model the Python API would."""

import inspect

import pytest

from workshop_lib.cli import Parser, build_parser
from workshop_lib.cli.flags import NOT_FLAGS, add_model_flags, model_config
from workshop_lib.errors import UsageError
from workshop_lib.models import MMR, RD4AD, PatchCore
from workshop_lib.models.base import REGISTRY


def parse(model_cls, *argv):
    parser = Parser()
    add_model_flags(parser, model_cls)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_parameter_is_a_flag_with_the_constructor_default(method):
    model_cls = REGISTRY[method]
    config = model_config(model_cls, parse(model_cls))
    expected = {name: p.default for name, p in inspect.signature(model_cls.__init__).parameters.items()
                if name != "self" and name not in NOT_FLAGS.get(method, ())}
    assert config == expected
    assert model_cls(**config).get_config() == model_cls().get_config()  # the Python API's default model


def test_upstream_spellings_are_aliases():
    args = parse(PatchCore, "-b", "resnet18", "-le", "layer2", "-le", "layer3", "-p", "0.25",
                 "--anomaly_scorer_num_nn", "3", "--sampler", "identity")
    config = model_config(PatchCore, args)
    assert (config["backbone"], config["layers"], config["num_neighbors"]) == ("resnet18", ["layer2", "layer3"], 3)
    assert config["coreset_ratio"] == 1.0  # --sampler identity keeps every patch, whatever -p says
    assert model_config(PatchCore, parse(PatchCore, "--percentage", "0.25"))["coreset_ratio"] == 0.25
    rd4ad = model_config(RD4AD, parse(RD4AD, "--patches_per_row", "2", "--patches_per_column", "3",
                                      "--betas", "0.9", "0.99"))
    assert (rd4ad["tile_columns"], rd4ad["tile_rows"], rd4ad["betas"]) == (2, 3, (0.9, 0.99))
    assert model_config(MMR, parse(MMR, "--no_augment"))["augment"] is False
    assert model_config(MMR, parse(MMR, "--layers", "layer1", "layer2"))["layers"] == ["layer1", "layer2"]


def test_optional_dimensions_take_none_and_refuse_nonsense():
    args = parse(PatchCore, "--pretrain_embed_dimension", "none", "--target_embed_dimension", "512")
    assert (args.pretrain_embed_dimension, args.target_embed_dimension) == (None, 512)
    assert parse(PatchCore, "--target_embed_dimension", "None").target_embed_dimension is None  # work/utils.py
    for bad in ("0", "-3", "big"):
        with pytest.raises(UsageError, match="positive integer or 'none'"):
            parse(PatchCore, "--target_embed_dimension", bad)


def test_help_shows_the_constructor_defaults():
    text = build_parser()._subparsers._group_actions[0].choices["patchcore"]._subparsers._group_actions[0] \
        .choices["train"].format_help()
    assert "-p CORESET_RATIO, --percentage CORESET_RATIO" in text and "(default: 0.1)" in text
