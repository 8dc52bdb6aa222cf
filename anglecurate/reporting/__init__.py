"""The HTML report of a ranking folder (`anglecurate report`).

write       gathers what the report shows from the ranking (and validate's output),
            writes OUT/report/ atomically
summaries   pure reductions of the ranking's columns (per-layer spreads, categories)
figures     one PNG per figure, drawn with matplotlib (imported lazily)
page        the self-contained HTML page around them
pilot_section  the pilot's verdict, table and figure, when a pilot scored the ranking
"""
