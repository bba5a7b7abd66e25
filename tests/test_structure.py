"""The structure a newcomer relies on: one error type at the CLI boundary."""

from hashdistill import errors
from hashdistill.cli import main


def test_every_domain_error_is_a_hashdistill_error_and_still_a_value_error():
    from hashdistill._io import TensorFileError
    from hashdistill.codes import CodesFileError
    from hashdistill.data.images import ImageError
    from hashdistill.data.lists import ListFileError
    from hashdistill.data.sources import DataNotFoundError
    from hashdistill.index import IndexFileError
    from hashdistill.run import RunError

    for cls in (TensorFileError, CodesFileError, ImageError, ListFileError, DataNotFoundError, IndexFileError, RunError,
                errors.ConfigError, errors.MethodError, errors.CollectionError, errors.CodesError, errors.HasherError):  # fmt: skip
        assert issubclass(cls, errors.HashdistillError) and issubclass(cls, ValueError), cls


def test_a_value_error_from_inside_is_a_bug_not_the_users_fault(monkeypatch, capsys, tmp_path):
    """A ValueError that is not a HashdistillError (numpy, torch, our own bug) is reported as an internal error;
    a domain error from the same place is the user's one line."""
    from hashdistill import cli

    def broken(*a, **k):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(cli, "load_protocol", broken)
    assert main(["data", "info", "fmnist-1k"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hashdistill: error: internal error (ValueError: operands could not be broadcast") and "report" in err

    def refused(*a, **k):
        raise errors.DataError("fmnist-1k: damaged protocol file")

    monkeypatch.setattr(cli, "load_protocol", refused)
    assert main(["data", "info", "fmnist-1k"]) == 1
    assert capsys.readouterr().err == "hashdistill: error: fmnist-1k: damaged protocol file\n"
