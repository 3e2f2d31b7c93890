"""Every shipped recipe validates, and its header is the command that runs it."""

from pathlib import Path

import pytest

from retort.config import DistillConfig, build, load_yaml

ROOT = Path(__file__).parents[1]
RECIPES = [*sorted((ROOT / "recipes").glob("*.yaml")), ROOT / "recipes" / "long" / "distill.yaml"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_and_names_its_command(recipe):
    name = recipe.relative_to(ROOT).as_posix()
    assert recipe.read_text().startswith(f"# retort distill --config {name} ")
    # the header command supplies what the recipe leaves out (data, out, sometimes student)
    values = {"student": "prune:10", **load_yaml(recipe), "data": "store", "out": "run"}
    assert build(DistillConfig, values, str(recipe)).max_steps > 0


ACCELERATE_CONFIGS = sorted((Path(__file__).parents[1] / "recipes" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load_and_ask_for_plain_processes(path):
    from accelerate.commands.config.config_args import ClusterConfig

    assert path.read_text().startswith(
        f"# accelerate launch --config_file recipes/accelerate/{path.name} "
    )
    config = ClusterConfig.from_yaml_file(path)  # accelerate's own reader rejects unknown keys
    assert config.distributed_type == "MULTI_GPU"  # retort shards through --fsdp itself
    assert config.num_processes == 8 * config.num_machines
