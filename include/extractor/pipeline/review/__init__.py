"""The review loop: receipts people check in Airflow, and what their answers become.

``images`` reads a receipt's image back from where it came from; ``queue`` picks what waits
for review (loaded but flagged ``needs_review``, and quarantined receipts whose image can be
read); ``form`` turns one item into a human-in-the-loop form; ``corrections`` turns an answer
into a ``corrections`` row; ``export`` writes reviewed receipts as an ``eval`` dataset;
``tasks`` holds the ``receipts_review`` task bodies (the only module here that needs Airflow).
"""
