"""The provider's bill beside the meter: cost exports imported into ``invoice_lines`` and compared.

``spendstream invoices import FILE`` reads an export (:mod:`.formats`) and stores its
lines (:mod:`.table`); ``spendstream reconcile --invoices`` compares them per day ×
provider × model with the metered cost (:mod:`.compare`) and names every gap.
"""
