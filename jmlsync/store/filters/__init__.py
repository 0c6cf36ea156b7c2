"""SCIM filters compiled to SQL: the attribute-to-column map (:mod:`.columns`), the walk both
backends share (:mod:`.walker`), and one compiler per backend (:mod:`.sqlite`,
:mod:`.postgres`). :class:`jmlsync.store.dialect.Dialect` picks the compiler."""
