"""The HTML report of a ranking folder (`anglecurate report`).

write       gathers what the report shows from the ranking (and validate's output),
            writes OUT/report/ atomically
summaries   pure reductions of the ranking's columns (per-layer spreads, categories)
figures     one PNG per figure, drawn with matplotlib (imported lazily)
plotting    how the figures look: style and sizes for the page, whole-number ticks,
            legends and notes under the plots, binned medians
page        the self-contained HTML page around them
pilot_section  the pilot's verdict, table and figure, when a pilot scored the ranking
calibration_section  calibrate's measured pass rates along the angle and calibrated orders
            (the report's first figure), and the predictor's held-out quality
synthetic   a made-up ranking folder (and validate files) for seeing every section
"""
