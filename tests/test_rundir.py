"""What a run directory may start over: thce.rundir.check_new_run."""

import pytest

from thce.errors import ConfigError
from thce.rundir import check_new_run


def test_a_runs_own_config_may_resume_it_but_a_users_config_in_out_is_refused(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("# mine\nseed = 0\n")
    for flags in ({"resume": True, "overwrite": False}, {"resume": False, "overwrite": True}):
        with pytest.raises(ConfigError, match="writes its resolved config"):
            check_new_run(tmp_path, config_path=config, **flags)
        check_new_run(tmp_path / "elsewhere", config_path=config, **flags)  # another --out: fine
    (tmp_path / "metrics.csv").write_text("method\n")  # a run was started here: its own config.toml resumes it
    check_new_run(tmp_path, resume=True, overwrite=False, config_path=config)
    with pytest.raises(ConfigError, match="holds a run"):
        check_new_run(tmp_path, resume=False, overwrite=False, config_path=config)
