"""After training: the test-split evaluation (MC dropout, calibration), predictions, sweep
reports and figures."""
