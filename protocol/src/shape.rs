//! The shape of an Automerge document: how deep its objects nest and how many there are,
//! found by a walk with an explicit stack.
//!
//! A device chooses what it puts into a document, and a document nested 100,000 maps deep once
//! overflowed the stack of every recursive walk over it (serde's `AutoSerde`, the conflict walk,
//! dropping a deep `serde_json::Value`). Every recursive walk over a document in casenote runs
//! only after [`check`] has passed: the server refuses any push whose result breaks the limits
//! (`limits::DOC_DEPTH_MAX`, `limits::DOC_OBJECTS_MAX`), and the record views on a device
//! withhold a document that breaks them rather than walk it. This walk itself never recurses,
//! and it stops as soon as a limit is crossed, so its cost is bounded by the limits too (plus the
//! length of the document's texts and lists, which it reads element by element to find objects
//! hidden inside them).

use crate::limits::{DOC_DEPTH_MAX, DOC_OBJECTS_MAX};
use automerge::{ObjId, ObjType, ReadDoc, Value, ValueRef, ROOT};

/// What [`check`] found in a document within the limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// The deepest object's depth (the root is 0).
    pub depth: usize,
    /// Objects in the document, the root included, every concurrent value of a map key counted.
    pub objects: usize,
}

/// Which limit a document breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("objects nest deeper than {DOC_DEPTH_MAX} levels")]
    TooDeep,
    #[error("the document holds more than {DOC_OBJECTS_MAX} objects")]
    TooManyObjects,
}

/// Walks `doc` from the root and checks it against the limits: every value of every map key
/// (conflicting values included), and every element of every list and text.
pub fn check(doc: &impl ReadDoc) -> Result<Shape, ShapeError> {
    let mut shape = Shape::default();
    let mut stack: Vec<(ObjId, usize)> = vec![(ROOT, 0)];
    while let Some((obj, depth)) = stack.pop() {
        shape.objects += 1;
        shape.depth = shape.depth.max(depth);
        let mut children: Vec<ObjId> = Vec::new();
        match doc.object_type(&obj) {
            Ok(ObjType::Map | ObjType::Table) => {
                // One pass over the winning values; only a key with concurrent values is looked
                // up again, for all of them (a lookup per key made a wide map's walk quadratic).
                for item in doc.map_range(&obj, ..) {
                    if item.conflict {
                        for (value, id) in doc.get_all(&obj, item.key.as_ref()).unwrap_or_default()
                        {
                            if let Value::Object(_) = value {
                                children.push(id);
                            }
                        }
                    } else if let ValueRef::Object(_) = item.value {
                        children.push(item.id());
                    }
                    if shape.objects + stack.len() + children.len() > DOC_OBJECTS_MAX {
                        return Err(ShapeError::TooManyObjects);
                    }
                }
            }
            Ok(ObjType::List | ObjType::Text) => {
                for item in doc.list_range(&obj, ..) {
                    if let ValueRef::Object(_) = item.value {
                        children.push(item.id());
                        if shape.objects + stack.len() + children.len() > DOC_OBJECTS_MAX {
                            return Err(ShapeError::TooManyObjects);
                        }
                    }
                }
            }
            Err(_) => {}
        }
        if !children.is_empty() && depth + 1 > DOC_DEPTH_MAX {
            return Err(ShapeError::TooDeep);
        }
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::AutoCommit;

    fn nested(depth: usize) -> AutoCommit {
        let mut doc = AutoCommit::new();
        let mut obj = ROOT;
        for _ in 0..depth {
            obj = doc.put_object(&obj, "m", ObjType::Map).unwrap();
        }
        doc
    }

    #[test]
    fn depth_is_counted_from_the_root_and_bounded() {
        assert_eq!(
            check(&AutoCommit::new()).unwrap(),
            Shape {
                depth: 0,
                objects: 1
            }
        );
        assert_eq!(check(&nested(DOC_DEPTH_MAX)).unwrap().depth, DOC_DEPTH_MAX);
        assert_eq!(check(&nested(DOC_DEPTH_MAX + 1)), Err(ShapeError::TooDeep));
    }

    #[test]
    fn a_document_far_deeper_than_any_stack_is_refused_without_recursion() {
        // Run on a thread with a small stack: a recursive walk of 200,000 levels would overflow it.
        let doc = nested(200_000);
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || check(&doc))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result, Err(ShapeError::TooDeep));
    }

    #[test]
    fn objects_inside_texts_lists_and_conflicts_are_counted() {
        let mut doc = AutoCommit::new();
        let text = doc.put_object(ROOT, "t", ObjType::Text).unwrap();
        doc.splice_text(&text, 0, 0, "hello").unwrap();
        let block = doc.insert_object(&text, 2, ObjType::Map).unwrap();
        doc.put_object(&block, "inner", ObjType::Map).unwrap();
        let list = doc.put_object(ROOT, "l", ObjType::List).unwrap();
        doc.insert_object(&list, 0, ObjType::Map).unwrap();
        let mut other = doc.fork().with_actor(automerge::ActorId::random());
        doc.put_object(ROOT, "c", ObjType::Map).unwrap();
        other.put_object(ROOT, "c", ObjType::Map).unwrap();
        doc.merge(&mut other).unwrap();
        // root, text, block, inner, list, its map, and both concurrent values of "c".
        assert_eq!(
            check(&doc).unwrap(),
            Shape {
                depth: 3,
                objects: 8
            }
        );
    }

    #[test]
    fn an_object_among_concurrent_scalars_is_walked_whichever_value_wins() {
        let mut doc = AutoCommit::new();
        let mut other = doc.fork().with_actor(automerge::ActorId::random());
        let mut third = doc.fork().with_actor(automerge::ActorId::random());
        doc.put(ROOT, "c", 1).unwrap();
        let map = other.put_object(ROOT, "c", ObjType::Map).unwrap();
        other.put_object(&map, "inner", ObjType::List).unwrap();
        third.put(ROOT, "c", "x").unwrap();
        doc.merge(&mut other).unwrap();
        doc.merge(&mut third).unwrap();
        assert_eq!(doc.get_all(ROOT, "c").unwrap().len(), 3);
        // root, the map among the three values of "c", and the list inside it.
        assert_eq!(
            check(&doc).unwrap(),
            Shape {
                depth: 2,
                objects: 3
            }
        );
    }

    #[test]
    fn too_many_objects_are_refused() {
        let mut doc = AutoCommit::new();
        let wide = doc.put_object(ROOT, "wide", ObjType::Map).unwrap();
        for i in 0..DOC_OBJECTS_MAX {
            doc.put_object(&wide, i.to_string(), ObjType::Map).unwrap();
        }
        assert_eq!(check(&doc), Err(ShapeError::TooManyObjects));
    }
}
