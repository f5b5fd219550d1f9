"""Progressive lesions as a count range [low, high] (criteria.md §4, medcare-2).

Four representations, each read on its own, then weighed:
1. a lesion-count observation: [n, n] (a count made on PET is itself possible: [0, n]);
2. lesion-level findings of every exam in the window, combined by site: [certain,
   certain + possible] (possible: PET, flare, size, unknown location, unmatched across exams);
3. a disease status "worsened": [1, open] (not when it rests on laboratory results only);
4. new metastasis Conditions, counted by organ or node region: [certain sites, open] (an onset
   in the window is certain, a recordedDate alone possible).
The primary evidence is the first present in the order 1, 2, then 3 and 4 together (low is the
larger of the two). No representation hides another: sources that fall on different sides of
the limit are a conflict, and a progressive intracranial lesion from any of them is reported.

Only evidence dated within the imaging window (42 days before as_of) is used.

Modules: model (Source, Progression), progression (find_progression: read and weigh), counts,
findings and status (the representations), metastases (prostate metastases and their sites,
for every criterion that reads them), strata (criteria.md §6).
"""
