;; Identity and edge-case functions for argument conversion and result rendering.
(module
  (func (export "id_i32") (param i32) (result i32) local.get 0)
  (func (export "id_i64") (param i64) (result i64) local.get 0)
  (func (export "id_f32") (param f32) (result f32) local.get 0)
  (func (export "id_f64") (param f64) (result f64) local.get 0)
  (func (export "pair") (param i64 f64) (result i64 f64) local.get 0 local.get 1)
  (func (export "nothing"))
  (func (export "nan") (result f64) f64.const 0 f64.const 0 f64.div)
  (func (export "nan_f32") (result f32) f32.const 0 f32.const 0 f32.div)
  (func (export "inf") (result f64) f64.const 1 f64.const 0 f64.div)
  (func (export "neg_inf") (result f32) f32.const -1 f32.const 0 f32.div)
  (func (export "tenth_f32") (result f32) f32.const 0.1)
  (func (export "simd") (param v128) (result i32) i32.const 0))
