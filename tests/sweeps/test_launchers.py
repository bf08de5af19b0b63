"""What a launcher shows while a sweep runs."""
import logging


def test_each_submitit_warning_is_shown_once(capfd):
    """A cluster without accounting fails sacct at every poll; submitit logs it on stdout, stderr and the root."""
    import submitit.core.logger  # noqa: F401  (configures submitit's handlers, as the launcher does)

    from cotresnet.sweeps.launchers import submitit_warnings_once

    lg = logging.getLogger("submitit")
    before = (lg.propagate, list(lg.filters), {h: list(h.filters) for h in lg.handlers})
    logging.getLogger().addHandler(root := logging.StreamHandler())
    try:
        submitit_warnings_once()
        for call in (1, 2, 3):
            logging.getLogger("submitit").warning(f"Call #{call} - Bypassing sacct error no accounting")
    finally:
        logging.getLogger().removeHandler(root)
        lg.propagate, lg.filters = before[0], before[1]
        for h, filters in before[2].items():
            h.filters = filters
    out, err = capfd.readouterr()
    assert (out + err).count("Bypassing sacct error") == 1 and "Bypassing" in err
