"""The artifact contract, shared by the exporters that write artifacts and the runtimes that
read them (torch-free): :mod:`.metadata` (edgevit's record inside every artifact),
:mod:`.integrity` (its content digest), :mod:`.input_form` (layout, pixels or normalized),
:mod:`.preprocess` (an image or ``.npy`` file as an input) and :mod:`.labels`."""
